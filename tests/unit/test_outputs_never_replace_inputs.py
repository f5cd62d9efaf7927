"""Hostile output paths: an output never replaces an input, and a command's outputs land together.

Each case runs the real command line in-process on a small MatMul model and checks the exit
status, the one-line message, and that every input is byte-identical afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeq.cli import main


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", 64])], [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "data.npz", x=rng.standard_normal((8, 64)).astype(np.float32))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in err), err
    return code, err


@pytest.mark.parametrize("argv", [
    ["quantize", "{m}", "-o", "{m}", "--quiet"],
    ["quantize", "{m}", "-o", "{d}/q.onnx", "--summary", "{m}", "--quiet"],
    ["quantize", "{m}", "-o", "{d}/link.onnx", "--quiet"],
    ["quantize", "{m}", "-o", "{d}/hard.onnx", "--quiet"],
    ["calibrate", "{m}", "--data", "{d}/data.npz", "-o", "{m}", "--quiet"],
    ["calibrate", "{m}", "--data", "{d}/data.npz", "-o", "{d}/data.npz", "--quiet"],
    ["compare", "{m}", "{d}/link.onnx", "--data", "{d}/data.npz", "-o", "{m}", "--no-latency"],
    ["profile", "{m}", "-o", "{m}", "--iterations", "3"],
    ["profile", "{m}", "--json", "{m}", "--iterations", "3"],
    ["export", "{m}", "--target", "x86-cpu", "-o", "{d}", "--quiet"],
])
def test_an_output_naming_an_input_is_refused_before_any_work(model, capsys, argv):
    folder = model.parent
    (folder / "link.onnx").symlink_to(model)
    (folder / "hard.onnx").hardlink_to(model)
    before = snapshot(folder)
    code, err = run(capsys, *[a.format(m=model, d=folder) for a in argv])
    assert code == 2 and len(err) == 1, err
    assert "input" in err[0], err
    assert snapshot(folder) == before


def test_the_runtime_refuses_a_json_over_its_model(model, capsys):
    from edgeq_runtime.cli import main as run_main

    before = model.read_bytes()
    assert run_main(["bench", str(model), "--json", str(model), "--iterations", "3"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_an_unwritable_summary_leaves_no_model(model, capsys, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    code, err = run(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--summary", tmp_path / "blocker" / "s.json", "--quiet")
    assert code == 2 and len(err) == 1 and "blocker" in err[0]
    assert not (tmp_path / "q.onnx").exists()


def test_a_failed_summary_write_takes_the_model_back(model, capsys, tmp_path, monkeypatch):
    """A failure after the work (here: writing the summary) leaves neither output."""
    from edgeq.quantize.summary import QuantizationSummary

    def broken(self, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(QuantizationSummary, "save", broken)
    code, err = run(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--summary", tmp_path / "s.json", "--quiet")
    assert code == 2 and len(err) == 1 and "No space left" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "m.onnx"]


def test_model_and_summary_land_together(model, capsys, tmp_path):
    code, _ = run(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--summary", tmp_path / "s.json", "--quiet")
    assert code == 0
    assert json.loads((tmp_path / "s.json").read_text())["_type"]
    onnx.checker.check_model(str(tmp_path / "q.onnx"), full_check=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_export_never_replaces_a_folder_that_is_not_its_bundle(model, capsys, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my web app"}')
    (web / "index.html").write_text("<p>hi</p>")
    before = snapshot(web)
    code, err = run(capsys, "export", model, "--target", "x86-cpu", "-o", web, "--quiet")
    assert code == 2 and len(err) == 1 and "not an edgeq bundle" in err[0] and "--force" in err[0]
    assert snapshot(web) == before


def test_export_refuses_a_bundle_with_a_file_its_manifest_does_not_list(model, capsys, tmp_path):
    bundle = tmp_path / "bundle"
    assert run(capsys, "export", model, "--target", "x86-cpu", "-o", bundle, "--quiet")[0] == 0
    (bundle / "notes.txt").write_text("mine")
    code, err = run(capsys, "export", model, "--target", "x86-cpu", "-o", bundle, "--quiet")
    assert code == 2 and "notes.txt" in err[0]
    assert (bundle / "notes.txt").read_text() == "mine"
    assert run(capsys, "export", model, "--target", "x86-cpu", "-o", bundle, "--quiet", "--force")[0] == 0
    assert not (bundle / "notes.txt").exists()
    # a bundle holding only its own files is replaced without --force
    assert run(capsys, "export", model, "--target", "x86-cpu", "-o", bundle, "--quiet")[0] == 0


@pytest.mark.parametrize("option", ["-o", "--summary"])
def test_a_file_output_ending_in_a_slash_is_refused(model, capsys, tmp_path, option):
    argv = ["quantize", model, "-o", tmp_path / "q.onnx", "--quiet"]
    argv += [option, f"{tmp_path}/new/"] if option == "--summary" else []
    if option == "-o":
        argv[3] = f"{tmp_path}/new/"
    code, err = run(capsys, *argv)
    assert code == 2 and len(err) == 1 and "names a folder" in err[0], err
    assert not (tmp_path / "new").exists()
