"""On a clean machine the runtime needs nothing but numpy and onnxruntime.

A truly fresh venv (no system site-packages; Python 3.8 when installed, as on JetPack 5) gets only
``pip install --no-deps -e runtime`` and ``pip install numpy onnxruntime``, then runs
``python -m edgeq_runtime bench`` on a bundle. Needs the package index; skipped when pip cannot
reach it. Measured: about 65 s with a cold pip cache, so it is marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
from rt_helpers import make_bundle
from test_runtime_portability import PACKAGE, python38

NETWORK_HINTS = ("Could not find a version", "No matching distribution", "NewConnectionError", "Temporary failure",
                 "Network is unreachable", "Max retries exceeded", "Name or service not known")


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_bench_in_a_fresh_venv_with_only_numpy_and_onnxruntime(tmp_path):
    base = python38() or sys.executable
    env_dir = tmp_path / "venv"
    if base == sys.executable:
        venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(str(env_dir))
    else:
        subprocess.run([base, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    started = time.monotonic()
    for args in (("--no-deps", "-e", str(PACKAGE.parent)), ("numpy", "onnxruntime")):
        done = _pip(python, *args)
        if done.returncode != 0:
            if any(hint in done.stderr for hint in NETWORK_HINTS):
                pytest.skip("pip could not reach a package index: " + done.stderr.strip().splitlines()[-1])
            raise AssertionError("pip install " + " ".join(args) + " failed:\n" + done.stderr)
    install_s = time.monotonic() - started

    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "edgeq" not in names and "torch" not in names and "onnx" not in names
    assert {"edgeq-runtime", "numpy", "onnxruntime"} <= names

    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "result.json"
    run = subprocess.run([str(python), "-m", "edgeq_runtime", "bench", str(bundle), "--warmup", "2", "--iterations", "20",
                          "--energy", "none", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["schema"] == "edgeq_runtime.BenchmarkResult" and data["iterations"] == 20
    assert data["versions"]["onnxruntime"] and data["device"]["python"].startswith(
        "3.8" if base != sys.executable else "{}.{}".format(*sys.version_info[:2])
    )
    print("fresh venv ({}): install {:.0f} s".format(data["device"]["python"], install_s))
