from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeq.cli import main


def _tiny_model(path: Path) -> Path:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("calibrate", "quantize", "export", "profile", "compare", "targets", "inspect"):
        assert command in out, command


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "edgeq 0.1.0" in capsys.readouterr().out


def test_inspect_reports_real_counts(tmp_path, capsys):
    model = _tiny_model(tmp_path / "m.onnx")
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "parameters: 12" in out
    assert "mm (MatMul, weight W [3, 4])" in out
    assert "x: float [batch, 3]" in out


def test_missing_file_is_one_line_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope.onnx" in err[0]


def test_not_onnx_and_truncated(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    assert main(["inspect", str(bad)]) == 2
    assert "bad.onnx" in capsys.readouterr().err
    good = _tiny_model(tmp_path / "good.onnx")
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["inspect", str(truncated)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trunc.onnx" in err[0]


def test_unknown_option_value(tmp_path, capsys):
    model = _tiny_model(tmp_path / "m.onnx")
    code = main(["quantize", str(model), "--weights", "int3", "-o", str(tmp_path / "q.onnx")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights" in err[0] and "int3" in err[0]
    assert not (tmp_path / "q.onnx").exists()


def test_cli_subprocess_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgeq", "inspect", str(tmp_path / "missing.onnx")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_every_scheme_is_found_whichever_module_was_imported_first():
    import subprocess
    import sys

    code = (
        "import edgeq.quantize.schemes.mixed.scheme\n"
        "from edgeq.quantize.api import _HANDLERS, quantize\n"
        "from edgeq.quantize.config import Int8Config, WeightOnlyConfig\n"
        "import onnx\n"
        "assert Int8Config not in _HANDLERS  # importing the mixed scheme does not register int8\n"
        "try:\n    quantize(onnx.ModelProto(), Int8Config())\nexcept Exception as e:\n    pass\n"
        "print(sorted(t.__name__ for t in _HANDLERS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Int8Config" in out and "WeightOnlyConfig" in out and "MixedPrecisionConfig" in out


def test_calib_help_states_the_one_precedence(capsys):
    for command in ("quantize", "export"):
        assert main([command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "With --data too, --data decides the activation ranges (noted in the summary)" in out, command


def test_bad_option_fails_before_the_model_is_read(tmp_path, capsys):
    """The config checks itself when built: the option is named even though the model is missing."""
    for flags in (["--block-size", "24"], ["--exclude", "("], ["--activations", "int8", "--weights", "int8", "--op-types", "Relu"]):
        assert main(["quantize", str(tmp_path / "missing.onnx"), *flags, "-o", str(tmp_path / "q.onnx")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flags[-2] in err[0] and "missing.onnx" not in err[0], err
