"""Wall time of one 8-configuration sweep on MiniLM: serial in one process vs local Ray (2 CPUs),
and a rerun of the finished sweep (every job a cache hit, so no Ray is started).

Targets (issue 20): Ray ≤ 0.65× serial on this 2-core machine; the rerun < 5 % of the first run.
The Ray time includes ``ray.init`` (starting the local cluster). Each run has its own fresh
output folder, so neither profits from the other's cache.

    python benchmarks/sweep.py [--cache .cache/examples] [--samples 8] [--boards boards.toml]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def grid_toml(samples: int = 8, iterations: int = 50, warmup: int = 5, idle_s: float = 0.5,
              blocks: tuple[int, ...] = (32, 64, 128, 256)) -> str:
    """The sweep measured here (and run by tests/integration/test_fleet_sweep.py): int4/int8 × blocks."""
    return (
        '[[grid]]\nscheme = "weight_only"\nweights = ["int4", "int8"]\n'
        f"block_size = {list(blocks)}\n\n[options]\nsamples = {samples}\niterations = {iterations}\n"
        f"warmup = {warmup}\nidle_s = {idle_s}\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.environ.get("EDGEQ_EXAMPLES_CACHE", str(ROOT / ".cache" / "examples")))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--boards", default=None, help="also profile every result on these boards")
    args = parser.parse_args()

    from edgeq.fleet.sweep import run_sweep
    from examples.datasets import build_text_sets
    from examples.models import build_minilm

    model = build_minilm(Path(args.cache))
    calib, _ = build_text_sets(Path(args.cache))
    work = Path(tempfile.mkdtemp(prefix="edgeq-sweep-bench-"))
    grid = work / "sweep.toml"
    grid.write_text(grid_toml(samples=args.samples))
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        for label, serial, out in (("serial", True, work / "serial"), ("ray (2 CPUs)", False, work / "ray"),
                                   ("rerun (cache)", False, work / "ray")):
            start = time.perf_counter()
            result = run_sweep(model, grid, calib, out, args.boards, serial=serial, num_cpus=2)
            times[label] = time.perf_counter() - start
            cpu[label] = sum(r.get("cpu_s", 0.0) for r in result.jobs if not r.get("cached"))
            print(f"{label:<14} {times[label]:8.1f} s  ({result.executor}, {len(result.rows)} rows)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ray_ratio = times["ray (2 CPUs)"] / times["serial"]
    rerun_ratio = times["rerun (cache)"] / times["ray (2 CPUs)"]
    print()
    print("| run | wall time (s) | vs serial |")
    print("| --- | --- | --- |")
    for label, seconds in times.items():
        print(f"| {label} | {seconds:.1f} | {seconds / times['serial']:.3f} |")
    print()
    print(f"{'PASS' if ray_ratio <= 0.65 else 'FAIL'}: Ray / serial = {ray_ratio:.3f} (target <= 0.65)")
    print(f"{'PASS' if rerun_ratio < 0.05 else 'FAIL'}: rerun / first run = {rerun_ratio:.4f} (target < 0.05)")
    print(f"CPU seconds of the jobs themselves: serial {cpu['serial']:.1f}, ray {cpu['ray (2 CPUs)']:.1f} "
          f"(serial used {cpu['serial'] / times['serial']:.2f} cores on average)")
    print(f"load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
