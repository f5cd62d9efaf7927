"""A command killed by SIGINT or SIGTERM at a random moment leaves its complete outputs or none.

``edgeq quantize`` writes two outputs (the model and its summary). Signals are sent at random
moments spread over a run's measured duration (seeded, so a failure reproduces); afterwards the
outputs are both complete or both absent, no temporary is left, the input is untouched, and the
message says exactly what exists.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

RUNS_PER_SIGNAL = 8


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("interrupts")
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(24):
        inits.append(numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, [1, 256])], inits)
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def command(model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgeq", "quantize", str(model), "-o", str(out / "q.onnx"),
            "--summary", str(out / "s.json"), "--method", "hqq", "--quiet"]


def check_outcome(out: Path, returncode: int, stderr: str) -> str:
    files = sorted(p.name for p in out.iterdir())
    assert not [f for f in files if f.startswith(".")], f"temporaries left: {files}"
    assert files in ([], ["q.onnx", "s.json"]), f"half the outputs: {files} (rc {returncode}, {stderr!r})"
    if files:
        onnx.checker.check_model(str(out / "q.onnx"), full_check=True)
        assert json.loads((out / "s.json").read_text())["_type"]
    assert "Traceback" not in stderr or returncode != 130 or "error:" not in stderr
    if "no output was written" in stderr:
        assert files == [], stderr
    if "interrupted after writing" in stderr:
        assert files == ["q.onnx", "s.json"], stderr
    return "complete" if files else "none"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_moment_leaves_all_outputs_or_none(model, tmp_path, signum):
    original = model.read_bytes()
    start = time.perf_counter()
    subprocess.run(command(model, tmp_path / "timing"), check=True, capture_output=True)
    duration = time.perf_counter() - start
    rng = random.Random(int(signum))
    outcomes = []
    for run in range(RUNS_PER_SIGNAL):
        out = tmp_path / f"run{run}"
        out.mkdir()
        proc = subprocess.Popen(command(model, out), stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 1.05) * duration)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
        outcomes.append(check_outcome(out, proc.returncode, stderr))
    assert model.read_bytes() == original
    assert "none" in outcomes  # the signals did land mid-run (a test that never interrupts proves nothing)
