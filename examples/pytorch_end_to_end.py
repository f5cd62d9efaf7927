"""From a PyTorch module to a Jetson bundle and a latency report: what a PyTorch user runs.

Every command takes the model as ``examples/efficientnet_factory.py:efficientnet_lite0``, a
function returning ``(module, example_inputs, dynamic_shapes)``. edgeq exports the module to
ONNX once, checks the graph against the module's own outputs, caches it, and every step
after that works on the checked graph. Run it with::

    python examples/pytorch_end_to_end.py --out out/pytorch

Each step prints the command you would type in a shell (``edgeq ...``) before running it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = f"{ROOT / 'examples' / 'efficientnet_factory.py'}:efficientnet_lite0"


def edgeq(*args: str | Path) -> None:
    """Run one ``edgeq`` command in this process, as if typed in a shell."""
    from edgeq.cli import main

    command = [str(a) for a in args]
    print(f"\n$ edgeq {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    if main(command) != 0:
        raise SystemExit(f"step failed: edgeq {shlex.join(command)}")
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def run(out: Path, cache: Path, samples: int) -> None:
    from edgeq.frontends.torch import export_factory
    from examples.datasets import build_image_sets

    out.mkdir(parents=True, exist_ok=True)
    images_calib, _ = build_image_sets(cache)  # photos shipped with scikit-image, preprocessed

    # 1. PyTorch -> ONNX: export, run both on the example inputs, compare (what every command does first).
    exported = export_factory(MODEL)
    print(f"exported {MODEL}\n  -> {exported.path}\n  opset {exported.opset}, "
          f"max |onnx - torch| = {exported.max_abs_diff:.2e} on the example inputs")

    # 2. Activation ranges on a few real images: every activation (--trt-cache), as int8 Q/DQ
    #    needs the residual inputs too; the TensorRT cache serves JetPack 5's implicit int8.
    edgeq("calibrate", MODEL, "--data", images_calib, "--samples", str(samples),
          "-o", out / "calib.json", "--trt-cache", out / "calib.cache", "--quiet")
    # 3. int8 weights and activations (Q/DQ, the form TensorRT builds int8 engines from).
    edgeq("quantize", MODEL, "--weights", "int8", "--activations", "int8", "--calib", out / "calib.json",
          "-o", out / "efficientnet.int8.onnx", "--summary", out / "summary.json", "--quiet")
    # 4. A bundle for the board: checked against the board's TensorRT, with a build script.
    edgeq("export", out / "efficientnet.int8.onnx", "--target", "jetson-orin-nano", "-o", out / "bundle", "--quiet")
    # 5. Latency here (onnxruntime on this CPU); on the board the same command uses TensorRT.
    edgeq("profile", out / "bundle", "--warmup", "2", "--iterations", "10", "--idle", "0",
          "-o", out / "profile.html", "--json", out / "profile.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "pytorch", help="Folder for every output.")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples", help="Example data cache.")
    parser.add_argument("--samples", type=int, default=32, help="Calibration images to use.")
    args = parser.parse_args()
    run(args.out.resolve(), args.cache.resolve(), args.samples)
    print(f"\nbundle: {args.out / 'bundle'}\nreport: {args.out / 'profile.html'}")


if __name__ == "__main__":
    main()
