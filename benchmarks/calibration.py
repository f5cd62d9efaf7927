"""Calibration speed and memory: edgeq against onnxruntime.quantization's calibrators.

EfficientNet-Lite0 on 64, 256 and 1024 calibration images. Every run is its own subprocess,
so peak RSS is that run's alone (``wait4``), and a watchdog kills any run whose resident
memory passes the ceiling: onnxruntime's histogram calibrators keep every batch's
activations until the end (about 60 MB per sample on this model), so at a few hundred
samples they need more memory than most machines have. Such a run is reported as out of
memory, not as a crash. A histogram peer is not started at a size where its own measured
per-sample growth predicts it would pass the ceiling (the prediction is printed); pass
``--run-predicted-oom`` to run it anyway and watch it hit the ceiling.

edgeq observes the same tensors as onnxruntime (every float activation) and computes the
thresholds of all four methods (minmax, percentile, entropy, mse) in one run, so one edgeq
run is compared with each onnxruntime calibrator.

    python benchmarks/calibration.py                 # 64, 256, 1024 samples
    python benchmarks/calibration.py --samples 64    # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("EDGEQ_EXAMPLES_CACHE", ROOT / ".cache" / "examples"))
PEERS = ("ort-minmax", "ort-entropy", "ort-percentile")
HISTOGRAM_PEERS = ("ort-entropy", "ort-percentile")
PERCENTILE = 99.99
PROBE_SAMPLES = (8, 24)  # two small runs per histogram peer: their peak RSS gives the growth per sample


# --- workers (run in a subprocess) --------------------------------------------------------


def _worker(kind: str, model_path: str, data_path: str, samples: int, batch_size: int, result_path: str) -> None:
    import numpy as np

    from edgeq.data import load_data
    from edgeq.graph.io import load_model

    start, cpu_start = time.perf_counter(), time.process_time()
    model = load_model(model_path)
    source = load_data(data_path, model, samples=samples, batch_size=batch_size)
    result: dict[str, Any] = {"samples": source.num_samples}
    if kind.startswith("edgeq"):
        from edgeq.calibrate import calibrate

        tensors = "all" if kind == "edgeq" else None
        table = calibrate(model, source, method="entropy", percentile=PERCENTILE, tensors=tensors, progress=False)
        result["ranges"] = {n: [t.min, t.max] for n, t in table.tensors.items()}
        result["thresholds"] = {n: t.thresholds for n, t in table.tensors.items()}
    else:
        from onnxruntime.quantization.calibrate import (
            CalibrationDataReader,
            CalibrationMethod,
            create_calibrator,
        )

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.batches = iter(source)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        method = {"ort-minmax": CalibrationMethod.MinMax, "ort-entropy": CalibrationMethod.Entropy,
                  "ort-percentile": CalibrationMethod.Percentile}[kind]
        options = {"percentile": PERCENTILE} if kind == "ort-percentile" else {}
        with tempfile.TemporaryDirectory() as tmp:
            calibrator = create_calibrator(
                model_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=method, extra_options=options,
            )
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
        result["ranges"] = {
            name: [float(np.asarray(value.range_value[0]).reshape(-1)[0]), float(np.asarray(value.range_value[1]).reshape(-1)[0])]
            for name, value in ranges.data.items()
        }
    result["wall"] = time.perf_counter() - start
    result["cpu"] = time.process_time() - cpu_start  # all threads: robust to a busy machine, unlike wall time
    Path(result_path).write_text(json.dumps(result))


# --- parent: subprocess with an RSS watchdog ------------------------------------------------


@dataclass
class Run:
    kind: str
    samples: int
    status: str = "ok"
    wall: float | None = None
    cpu: float | None = None
    peak_mb: float | None = None
    tensors: int | None = None
    ranges: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_one(kind: str, args: argparse.Namespace, samples: int) -> Run:
    run = Run(kind, samples)
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--worker", kind, "--model", str(args.model), "--data", str(args.data),
                   "--batch-size", str(args.batch_size), "--worker-samples", str(samples), "--result", str(result_path)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        killed_for_memory = False
        started = time.perf_counter()
        watched_peak = 0.0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            rss = _rss_mb(process.pid)
            watched_peak = max(watched_peak, rss)
            if rss > args.ceiling_gb * 1024 and not killed_for_memory:
                os.kill(process.pid, signal.SIGKILL)
                killed_for_memory = True
            if time.perf_counter() - started > args.timeout and not killed_for_memory:
                os.kill(process.pid, signal.SIGKILL)
                run.status = f"timeout>{args.timeout:.0f}s"
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read() if process.stderr else ""
        run.peak_mb = max(usage.ru_maxrss / 1024, watched_peak)
        if killed_for_memory:
            run.status = f"OOM>{args.ceiling_gb:.1f}GB"
            run.note = f"killed at {watched_peak / 1024:.1f} GB after {time.perf_counter() - started:.0f} s"
        elif run.status.startswith("timeout"):
            pass
        elif process.returncode != 0:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}"
            run.status = "OOM (MemoryError)" if "MemoryError" in stderr else ("killed" if process.returncode < 0 else "failed")
            run.note = last[:160]
        else:
            result = json.loads(result_path.read_text())
            run.wall = result["wall"]
            run.cpu = result["cpu"]
            run.ranges = result["ranges"]
            run.tensors = len(result["ranges"])
            run.samples = result["samples"]
    return run


# --- report ----------------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def print_table(runs: list[Run]) -> None:
    print(f"{'samples':>7}  {'calibrator':<15} {'tensors':>7} {'wall s':>7} {'cpu s':>7} {'samples/s':>9} {'peak RSS MB':>11}  status")
    for run in runs:
        rate = run.samples / run.wall if run.wall else None
        print(f"{run.samples:>7}  {run.kind:<15} {_fmt(run.tensors, 'd'):>7} {_fmt(run.wall, '.1f'):>7} {_fmt(run.cpu, '.1f'):>7} "
              f"{_fmt(rate, '.2f'):>9} {_fmt(run.peak_mb, '.0f'):>11}  {run.status}{'  ' + run.note if run.note else ''}")


def minmax_agreement(ours: Run, theirs: Run) -> tuple[int, float]:
    """Tensors compared and the largest |difference| / max(1, |value|) over their min and max."""
    common = sorted(set(ours.ranges) & set(theirs.ranges))
    worst = 0.0
    for name in common:
        for a, b in zip(ours.ranges[name], theirs.ranges[name], strict=True):
            worst = max(worst, abs(a - b) / max(1.0, abs(b)))
    return len(common), worst


def check_targets(runs: list[Run], sizes: list[int]) -> list[str]:
    by = {(r.kind, r.samples): r for r in runs}
    lines = []
    small, large = min(sizes), max(sizes)
    a, b = by.get(("edgeq", small)), by.get(("edgeq", large))
    if a and b and a.peak_mb and b.peak_mb and a.status == b.status == "ok" and small != large:
        growth = (b.peak_mb - a.peak_mb) / a.peak_mb
        verdict = "PASS" if growth <= 0.10 else "FAIL"
        lines.append(f"{verdict}  edgeq peak RSS at {large} samples {b.peak_mb:.0f} MB vs {a.peak_mb:.0f} MB at {small}: {growth:+.1%} (target within 10%)")
    for size in (64, 256):
        ours = by.get(("edgeq", size))
        for peer in HISTOGRAM_PEERS:
            theirs = by.get((peer, size))
            if ours is None or theirs is None or ours.wall is None:
                continue
            if theirs.wall is None:
                lines.append(f"n/a   {peer} at {size}: could not finish ({theirs.status}{', ' + theirs.note if theirs.note else ''}); edgeq took {ours.wall:.1f} s")
                continue
            speedup = theirs.wall / ours.wall
            cpu_speedup = (theirs.cpu or 0.0) / ours.cpu if ours.cpu else 0.0
            verdict = "PASS" if speedup >= 3 else "FAIL"
            lines.append(f"{verdict}  {size} samples: edgeq {ours.wall:.1f} s vs {peer} {theirs.wall:.1f} s wall = {speedup:.2f}x "
                         f"(target >= 3x); CPU time {ours.cpu:.1f} s vs {theirs.cpu:.1f} s = {cpu_speedup:.2f}x")
    for size in sizes:
        ours, theirs = by.get(("edgeq", size)), by.get(("ort-minmax", size))
        if ours and theirs and ours.ranges and theirs.ranges:
            count, worst = minmax_agreement(ours, theirs)
            verdict = "PASS" if worst <= 1e-6 and count > 0 else "FAIL"
            lines.append(f"{verdict}  {size} samples: minmax ranges of {count} common tensors differ from ort MinMax by at most {worst:.2e} (target 1e-6)")
    return lines


def _ensure_inputs(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    if args.model is None:
        args.model = DEFAULT_CACHE / "efficientnet_lite0.onnx"
        if not args.model.is_file():
            from examples.models import build_efficientnet_lite0

            args.model = build_efficientnet_lite0(DEFAULT_CACHE)
    if args.data is None:
        args.data = DEFAULT_CACHE / "images_calib.npz"
        if not args.data.is_file():
            from examples.datasets import build_image_sets

            args.data = build_image_sets(DEFAULT_CACHE)[0]


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 16.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--samples", default="64,256,1024", help="comma-separated sample counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)} (empty for none)")
    parser.add_argument("--ceiling-gb", type=float, default=None,
                        help="memory ceiling per run (default: min(20, 75%% of available memory))")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--run-predicted-oom", action="store_true")
    parser.add_argument("--with-default-tensors", action="store_true",
                        help="also time edgeq's default tensor set (inputs of quantizable nodes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the runs as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-samples", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            _worker(args.worker, str(args.model), str(args.data), args.worker_samples, args.batch_size, args.result)
        except MemoryError:
            print("MemoryError", file=sys.stderr)
            return 3
        return 0

    _ensure_inputs(args)
    if args.ceiling_gb is None:
        args.ceiling_gb = min(20.0, 0.75 * _available_gb())
    sizes = sorted(int(s) for s in args.samples.split(",") if s.strip())
    peers = [p for p in args.peers.split(",") if p.strip()]
    print(f"model {args.model}\ndata {args.data}\nbatch size {args.batch_size}, memory ceiling {args.ceiling_gb:.1f} GB per run, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n", flush=True)
    runs: list[Run] = []
    growth: dict[str, tuple[float, float, int]] = {}  # peer -> (MB per sample, peak MB, at samples)
    for peer in peers:
        if peer not in HISTOGRAM_PEERS:
            continue
        low, high = (run_one(peer, args, n) for n in PROBE_SAMPLES)
        if low.peak_mb and high.peak_mb and low.status == high.status == "ok":
            per_sample = (high.peak_mb - low.peak_mb) / (PROBE_SAMPLES[1] - PROBE_SAMPLES[0])
            growth[peer] = (per_sample, high.peak_mb, PROBE_SAMPLES[1])
        print(f"probe {peer}: peak {_fmt(low.peak_mb, '.0f')} MB at {PROBE_SAMPLES[0]} samples, "
              f"{_fmt(high.peak_mb, '.0f')} MB at {PROBE_SAMPLES[1]} -> "
              f"{_fmt(growth.get(peer, (None,))[0], '.1f')} MB per sample", flush=True)
    out_of_memory: dict[str, int] = {}  # kind -> smallest size that ran out of memory
    for size in sizes:
        kinds = ["edgeq"] + (["edgeq-default"] if args.with_default_tensors else []) + peers
        for kind in kinds:
            if kind in out_of_memory and not args.run_predicted_oom:
                run = Run(kind, size, status="skipped (OOM)", note=f"ran out of memory at {out_of_memory[kind]} samples")
                runs.append(run)
                print_table([run])
                continue
            if kind in growth and not args.run_predicted_oom:
                per_sample, peak, at = growth[kind]
                predicted = peak + per_sample * (size - at)
                if per_sample > 0 and predicted > args.ceiling_gb * 1024:
                    run = Run(kind, size, status="skipped (predicted OOM)",
                              note=f"measured {per_sample:.1f} MB/sample -> {predicted / 1024:.1f} GB > {args.ceiling_gb:.1f} GB ceiling")
                    runs.append(run)
                    print_table([run])
                    continue
            run = run_one(kind, args, size)
            runs.append(run)
            if run.status.startswith("OOM"):
                out_of_memory.setdefault(kind, size)
            print_table([run])
            sys.stdout.flush()
    print("\nall runs:")
    print_table(runs)
    for kind, (per_sample, _, _) in growth.items():
        print(f"{kind}: peak memory grows {per_sample:.1f} MB per sample (measured at {PROBE_SAMPLES[0]} and {PROBE_SAMPLES[1]} samples)")
    print("\ntargets:")
    for line in check_targets(runs, sizes):
        print("  " + line)
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.__dict__.items() if k != "ranges"} for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
