"""The whole edgeq pipeline on two real models, offline: what `make demo` runs.

Every step is the CLI command a user would type (printed before it runs), so this file doubles
as a walkthrough. Models are built from pip packages (EfficientNet-Lite0, all-MiniLM-L6-v2),
data from photos in scikit-image / scikit-learn and sentences shipped with CPython.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(*args: str | Path) -> None:
    command = ["edgeq", *(str(a) for a in args)]
    print(f"\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeq", *command[1:]], cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed ({proc.returncode}): {shlex.join(command)}")
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    args = parser.parse_args()
    cache: Path = args.cache.resolve()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    from examples.models import ensure_all

    print("building the example models and data sets (cached after the first run)...", flush=True)
    paths = ensure_all(cache)
    effnet, minilm = paths["efficientnet_lite0"], paths["minilm"]
    images_calib, images_eval = paths["images_calib"], paths["images_eval"]
    text_calib, text_eval = paths["text_calib"], paths["text_eval"]

    run("inspect", effnet)

    # EfficientNet-Lite0: calibrate, int8 QDQ, a Jetson bundle.
    run("calibrate", effnet, "--data", images_calib, "--samples", "256", "--method", "entropy",
        "-o", out / "effnet.calib.json", "--trt-cache", out / "effnet.calib.cache")
    run("quantize", effnet, "--activations", "int8", "--weights", "int8", "--data", images_calib,
        "--samples", "128", "-o", out / "effnet.int8.onnx", "--summary", out / "effnet.int8.summary.json", "--quiet")
    run("export", out / "effnet.int8.onnx", "--target", "jetson-orin-nano", "-o", out / "effnet-orin-nano")

    # MiniLM: weight-only 4-bit (GPTQ), 2-bit and NF4; a Jetson bundle of the 4-bit model.
    run("quantize", minilm, "--weights", "int4", "--block-size", "32", "--method", "gptq",
        "--data", text_calib, "--samples", "128", "-o", out / "minilm.int4.onnx", "--quiet")
    run("quantize", minilm, "--weights", "int2", "--block-size", "32", "--asymmetric", "--method", "gptq",
        "--data", text_calib, "--samples", "128", "-o", out / "minilm.int2.onnx", "--quiet")
    run("quantize", minilm, "--weights", "nf4", "--block-size", "64", "-o", out / "minilm.nf4.onnx", "--quiet")
    run("export", minilm, "--target", "jetson-orin-nano", "--weights", "int4", "--block-size", "128",
        "-o", out / "minilm-orin-nano")

    # Measure: latency (and energy where a sensor exists) of a bundle, accuracy of every variant.
    run("profile", out / "effnet-orin-nano", "-o", out / "profile.html", "--json", out / "profile.json",
        "--iterations", "50")
    run("compare", effnet, out / "effnet.int8.onnx", "--data", images_eval, "--samples", "200",
        "--json-out", out / "compare-effnet.json")
    run("compare", minilm, out / "minilm.int4.onnx", out / "minilm.int2.onnx", out / "minilm.nf4.onnx",
        "--data", text_eval, "--samples", "128", "--json-out", out / "compare-minilm.json")

    from edgeq.report import write_demo_report

    report = write_demo_report(
        [out / "compare-effnet.json", out / "compare-minilm.json"], [out / "profile.json"], out / "report.html",
        json_path=out / "report.json",
    )
    print(f"\nreport: {report}\nbundles: {out / 'effnet-orin-nano'}, {out / 'minilm-orin-nano'}")


if __name__ == "__main__":
    main()
