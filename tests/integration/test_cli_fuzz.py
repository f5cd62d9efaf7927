"""Random options and values against every command: exit 0 or 2, one short message, nothing else touched.

Hypothesis draws option names (real ones of each command and unknown ones) and values (numbers,
non-numbers, huge and negative sizes, paths that exist, do not exist, are folders or are the input
itself). Whatever it draws: the command exits 0 or 2 (1 only for `inspect --lint`'s documented
"violations found"), prints at most two stderr lines on 2 and never a traceback, leaves the inputs
byte-identical, and touches no file outside the outputs it was given.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from edgeq.cli import app, main

COMMANDS = dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
# Keep each drawn run short: these are appended after the drawn options (later options win in click).
OUTCOMES: list[tuple[str, int, list[str]]] = []
# A valid run of each command; the fuzz appends drawn options to it (a later option wins in click),
# so drawn values replace real ones and most draws reach the command's work, not only its parser.
BASE = {
    "calibrate": ["{model}", "--data", "{data}", "-o", "c.json", "--quiet"],
    "compare": ["{model}", "{model}", "--data", "{data}", "--no-latency"],
    "export": ["{model}", "--target", "x86-cpu", "-o", "bundle", "--quiet"],
    "inspect": ["{model}"],
    "profile": ["{model}", "--iterations", "2", "--idle", "0", "--energy", "none"],
    "quantize": ["{model}", "-o", "q.onnx", "--quiet"],
    "targets": [],
    "boards": ["check", "{text}"],
    "sweep": ["{model}", "--grid", "{text}", "--data", "{data}", "-o", "sweep", "--serial"],
}


def make_inputs(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 32])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", 32])], [w])
    inputs = root / "inputs"
    inputs.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), inputs / "m.onnx")
    np.savez(inputs / "d.npz", x=rng.standard_normal((4, 32)).astype(np.float32))
    (inputs / "folder").mkdir()
    (inputs / "text.txt").write_text("not a model")
    return {"model": inputs / "m.onnx", "data": inputs / "d.npz", "folder": inputs / "folder", "text": inputs / "text.txt"}


def option_names(name: str) -> list[str]:
    return [opt for p in COMMANDS[name].params for opt in p.opts if opt.startswith("-")]  # type: ignore[attr-defined]


def values(inputs: dict[str, Path], out: Path) -> st.SearchStrategy[str]:
    paths = [str(p) for p in inputs.values()] + [str(out / "o.onnx"), str(out / "o.json"), str(out / "sub" / "o"),
                                                 str(out), str(inputs["text"]) + "/x", "/nonexistent/x.onnx"]
    numbers = ["0", "-1", "1", "16", "32", "1048576", "99999999999999", "1e309", "nan", "abc", "", "3.5"]
    words = ["int4", "int8", "int2", "nf4", "fp4", "none", "gptq", "hqq", "rtn", "awq", "qdq", "bnb4", "matmulnbits",
             "x86-cpu", "jetson-orin-nano", "tensorrt", "onnxruntime", "entropy", "[", "(", "*", "12MB", "-5KB"]
    return st.sampled_from(paths + numbers + words)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("fuzz")
    return root, make_inputs(root)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_random_options_never_break_the_promise(name, workspace, capsys):
    root, inputs = workspace
    before = snapshot(root / "inputs")
    known = option_names(name)
    counter = iter(range(10**6))

    @settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        out = root / f"out-{name}-{next(counter)}"
        out.mkdir()
        names = st.sampled_from([*known, "--no-such-option", "-z"]) if known else st.just("--no-such-option")
        pairs = data.draw(st.lists(st.tuples(names, values(inputs, out)), max_size=4))
        base = [a.format(**{k: str(v) for k, v in inputs.items()}) for a in BASE[name]]
        if data.draw(st.integers(0, 9)) == 0:  # now and then the positionals themselves are wrong
            base = data.draw(st.sampled_from([[], [str(inputs["folder"])], [str(inputs["text"])]])) + base[1:]
        argv = [name, *base] + [x for pair in pairs for x in pair]
        cwd = os.getcwd()
        os.chdir(out)  # an output given as a relative name lands in out/
        try:
            code = main(argv)
        finally:
            os.chdir(cwd)
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("note:")]
        allowed = {0, 2} | ({1} if name == "inspect" and "--lint" in argv else set())
        OUTCOMES.append((name, code, err[:1]))
        assert code in allowed, (argv, code, captured.err)
        assert "Traceback" not in captured.err, (argv, captured.err)
        if code == 2:
            assert 1 <= len(err) <= 2, (argv, captured.err)
        assert snapshot(root / "inputs") == before, argv
        stray = [p for p in root.iterdir() if p.name not in ("inputs",) and not p.name.startswith("out-")]
        assert stray == [], (argv, stray)

    run()


def test_zz_the_fuzz_reached_real_work():
    """Some drawn runs succeeded and the failures were of several kinds: the fuzz is not all usage errors."""
    if not OUTCOMES:
        pytest.skip("run together with the fuzz tests above")
    succeeded = {name for name, code, _ in OUTCOMES if code == 0}
    assert {"quantize", "export", "calibrate", "profile"} <= succeeded, succeeded
    assert len({e[0].split(":")[1] for _, code, e in OUTCOMES if code == 2 and e}) >= 10
