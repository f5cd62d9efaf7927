"""``file.py:factory`` specs: every command's model argument, exported once, checked, cached."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeq.errors import ConfigError
from edgeq.frontends.spec import is_factory_spec, parse_factory_spec

FACTORY = """
import torch

EDGEQ_EXPORT = {"input_names": ["input"], "output_names": ["logits"]}


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x))


def make():
    torch.manual_seed(SEED)
    return Tiny(), (torch.randn(2, 4),), ({0: "batch"},)
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def factory_file(tmp_path):
    return _write(tmp_path / "tiny_model.py", FACTORY.replace("SEED", "0"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The default cache location, isolated per test (XDG_CACHE_HOME is where users' caches go)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "edgeq" / "torch"


# --- recognising and importing specs (no torch needed) -------------------------------------


def test_spec_recognition(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_factory_spec("models/net.py:make")
    assert is_factory_spec(Path("net.py:build_model_2"))
    assert is_factory_spec(r"C:\models\net.py:make")
    for not_spec in ("model.onnx", "net.py", "net.py:", "net.py:2fast", "bundle/", "net.onnx:make"):
        assert not is_factory_spec(not_spec), not_spec
    # A file really named like a spec is a file.
    (tmp_path / "odd.py:make").write_bytes(b"")
    assert not is_factory_spec("odd.py:make")


def test_missing_file_and_bad_spec_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.py:make: .*missing\.py not found"):
        parse_factory_spec(tmp_path / "missing.py:make")
    with pytest.raises(ConfigError, match=r"not a model factory spec"):
        parse_factory_spec("model.onnx")


def test_missing_function_lists_the_functions_there(tmp_path):
    from edgeq.frontends.spec import load_factory

    _write(tmp_path / "m.py", "def build():\n    pass\n\ndef other():\n    pass\n_hidden = 1\n")
    with pytest.raises(ConfigError, match=r"m\.py has no function 'make'; functions defined there: build, other"):
        load_factory(parse_factory_spec(f"{tmp_path}/m.py:make"))


def test_import_error_in_the_file_is_reported_in_one_line(tmp_path):
    from edgeq.frontends.spec import load_factory

    _write(tmp_path / "broken.py", "import not_a_real_module_xyz\n")
    with pytest.raises(ConfigError, match=r"broken\.py: importing it raised ModuleNotFoundError") as info:
        load_factory(parse_factory_spec(f"{tmp_path}/broken.py:make"))
    assert "\n" not in str(info.value)


def test_factory_can_import_its_neighbours(tmp_path):
    from edgeq.frontends.spec import call_factory

    _write(tmp_path / "helper_mod_for_edgeq_test.py", "VALUE = 41\n")
    _write(tmp_path / "f.py", "import helper_mod_for_edgeq_test as h\n\ndef make():\n    return h.VALUE + 1\n")
    assert call_factory(parse_factory_spec(f"{tmp_path}/f.py:make")) == 42
    assert str(tmp_path) not in __import__("sys").path  # the folder is on sys.path only meanwhile


@pytest.mark.parametrize(
    "options,pattern",
    [
        ("[1]", r"EDGEQ_EXPORT must be a dict, got list"),
        ('{"atoll": 1}', r"unknown option 'atoll'; expected some of input_names, output_names, opset, atol, rtol"),
        ('{"opset": "18"}', r"EDGEQ_EXPORT\['opset'\] must be int, got '18'"),
        ('{"input_names": [1]}', r"must be a list of strings"),
    ],
)
def test_export_options_are_validated(tmp_path, options, pattern):
    from edgeq.frontends.spec import export_options

    _write(tmp_path / "opts.py", f"EDGEQ_EXPORT = {options}\n\ndef make():\n    pass\n")
    with pytest.raises(ConfigError, match=pattern):
        export_options(parse_factory_spec(f"{tmp_path}/opts.py:make"))


# --- exporting (torch) ----------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "body,pattern",
    [
        ("return torch.nn.Linear(2, 2)", r"must return \(module, example_inputs\).*it returned Linear"),
        ("return (torch.nn.Linear(2, 2),)", r"it returned a 1-tuple"),
        ("return 'net', (torch.ones(1),)", r"first value must be a torch.nn.Module, got str"),
        ("return torch.nn.Linear(2, 2), 'x'", r"example_inputs: expected a tensor or a tuple of tensors, got str"),
        ("raise ValueError('no weights here')", r"the factory raised ValueError: no weights here"),
    ],
)
def test_wrong_factory_results_are_config_errors(tmp_path, cache, body, pattern):
    from edgeq.frontends.torch import export_factory

    _write(tmp_path / "bad.py", f"import torch\n\ndef make():\n    {body}\n")
    with pytest.raises(ConfigError, match=pattern) as info:
        export_factory(f"{tmp_path}/bad.py:make")
    assert "\n" not in str(info.value)
    assert not cache.exists()


def test_factory_with_arguments_is_refused(tmp_path, cache):
    from edgeq.frontends.torch import export_factory

    _write(tmp_path / "args.py", "def make(size):\n    pass\n")
    with pytest.raises(ConfigError, match=r"the factory must take no arguments"):
        export_factory(f"{tmp_path}/args.py:make")


def test_export_is_checked_cached_and_reused(factory_file, cache):
    from edgeq.frontends import factory_cache as frontend

    spec = f"{factory_file}:make"
    first = frontend.export_factory(spec)
    path = Path(first.path)
    assert path.parent.parent == cache and path.name == "model.onnx"
    assert first.input_names == ["input"] and first.output_names == ["logits"]
    assert first.max_abs_diff is not None and first.max_abs_diff < 1e-5
    assert (path.parent / "export.json").is_file()
    mtime = path.stat().st_mtime_ns

    calls = []
    real = frontend.to_onnx
    try:
        frontend.to_onnx = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[assignment]
        second = frontend.export_factory(spec)
    finally:
        frontend.to_onnx = real  # type: ignore[assignment]
    assert calls == [] and second.path == first.path and second.cache_key == first.cache_key
    assert path.stat().st_mtime_ns == mtime
    assert second.max_abs_diff == first.max_abs_diff

    # The cached graph has the dynamic batch the factory asked for.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": np.ones((7, 4), np.float32)})
    assert out.shape == (7, 3)


def test_changed_weights_or_code_never_reuse_a_stale_export(tmp_path, factory_file, cache):
    from edgeq.frontends.torch import export_factory

    first = export_factory(f"{factory_file}:make")
    # Same file name, different weights (as a retrained checkpoint would give): new entry.
    _write(factory_file, FACTORY.replace("SEED", "1"))
    second = export_factory(f"{factory_file}:make")
    assert second.cache_key != first.cache_key and second.path != first.path
    # Module code in another file changes: new entry even though the factory file did not.
    _write(tmp_path / "layers_for_edgeq_test.py", "import torch\n\nclass Scale(torch.nn.Module):\n"
           "    def forward(self, x):\n        return x * 2\n")
    spec_file = _write(tmp_path / "uses_layers.py", "import torch\nfrom layers_for_edgeq_test import Scale\n\n"
                       "def make():\n    return Scale(), torch.ones(1, 2)\n")
    a = export_factory(f"{spec_file}:make")
    _write(tmp_path / "layers_for_edgeq_test.py", "import torch\n\nclass Scale(torch.nn.Module):\n"
           "    def forward(self, x):\n        return x * 3\n")
    import sys

    sys.modules.pop("layers_for_edgeq_test", None)
    _write(spec_file, spec_file.read_text() + "\n# touched so the file is imported afresh\n")
    b = export_factory(f"{spec_file}:make")
    assert a.cache_key != b.cache_key
    session = ort.InferenceSession(b.path, providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.ones((1, 2), np.float32)})[0].tolist() == [[3, 3]]


def test_resolve_model_and_load_model_spec_accept_specs(factory_file, cache):
    from edgeq.frontends.resolve import load_model_spec, resolve_model
    from edgeq.graph.io import save_model

    spec = f"{factory_file}:make"
    path = resolve_model(spec)
    assert path.is_file() and path.parent.parent == cache
    model = load_model_spec(spec)
    assert [i.name for i in model.graph.input] == ["input"]
    # ONNX paths pass through untouched.
    onnx_path = save_model(model, factory_file.parent / "plain.onnx")
    assert resolve_model(onnx_path) == onnx_path
    assert resolve_model(str(onnx_path)) == onnx_path


def test_graph_io_takes_files_only(factory_file):
    """The lowest I/O layer never resolves specs (it sits below the frontends)."""
    from edgeq.errors import ModelLoadError
    from edgeq.graph.io import load_model

    with pytest.raises(ModelLoadError, match=r"file not found"):
        load_model(f"{factory_file}:make")


def test_cli_command_takes_a_spec(factory_file, cache, capsys):
    from edgeq.cli import main

    code = main(["inspect", f"{factory_file}:make", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"logits"' in out and '"batch"' in out


def test_cli_reports_a_bad_spec_in_one_line(tmp_path, cache, capsys):
    from edgeq.cli import main

    _write(tmp_path / "nofunc.py", "def build():\n    pass\n")
    code = main(["inspect", f"{tmp_path}/nofunc.py:make"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "has no function 'make'" in err


def test_unwritable_cache_is_a_config_error(factory_file, tmp_path):
    from edgeq.frontends.torch import export_factory

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"not_a_dir/sub: cannot write the export cache"):
        export_factory(f"{factory_file}:make", cache_dir=blocker / "sub")
    assert blocker.read_text() == ""


@pytest.mark.parametrize("where", ["import", "call"])
def test_a_factory_that_exits_is_an_error_naming_the_file(tmp_path, capsys, where):
    from edgeq.cli import main

    body = "import sys\nsys.exit(0)\ndef make():\n    pass\n" if where == "import" else "import sys\ndef make():\n    sys.exit(0)\n"
    factory = tmp_path / "exits.py"
    factory.write_text(body)
    for argv in (["inspect", f"{factory}:make"], ["quantize", f"{factory}:make", "-o", str(tmp_path / "q.onnx")]):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "exits.py" in err[0] and "sys.exit(0)" in err[0], err
    assert not (tmp_path / "q.onnx").exists()
