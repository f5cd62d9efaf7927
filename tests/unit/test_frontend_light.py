"""The frontend costs nothing until used, and says which extra to install when torch is absent."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Makes ``import torch`` fail in the child as it would on a machine without torch.
BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def _run(code: str, block_torch: bool = False) -> subprocess.CompletedProcess[str]:
    code = (BLOCK_TORCH if block_torch else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


LIGHT_MODULES = [
    "edgeq.frontends", "edgeq.frontends.spec", "edgeq.frontends.resolve", "edgeq.frontends.torch",
    "edgeq.frontends.torch_export", "edgeq.frontends.module_names", "edgeq.frontends.checkpoint",
    "edgeq.frontends.factory_cache", "edgeq.frontends.gguf", "edgeq.frontends.llama",
    "edgeq.frontends.decoder_export", "edgeq.graph.io",
]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_importing_the_frontend_does_not_import_torch(module):
    proc = _run(f"import sys, {module}\nprint('torch' in sys.modules, 'onnxscript' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_to_onnx_without_torch_names_the_extra():
    proc = _run("""
        from edgeq.errors import MissingDependencyError
        from edgeq.frontends.torch import load_checkpoint, to_onnx
        for call in (lambda: to_onnx(object(), ()), lambda: load_checkpoint("x.pt")):
            try:
                call()
            except MissingDependencyError as exc:
                print(exc)
    """, block_torch=True)
    assert proc.returncode == 0, proc.stderr
    expected = ("the PyTorch frontend needs the 'torch' package, which is not installed; "
                "install it with: pip install 'edgeq[torch]'")
    assert proc.stdout.splitlines() == [expected, expected]


def test_cli_with_a_spec_and_no_torch_is_one_error_line(tmp_path):
    (tmp_path / "net.py").write_text("def make():\n    raise AssertionError('never called without torch')\n")
    proc = _run(f"""
        import sys
        from edgeq.cli import main
        sys.exit(main(["inspect", {str(tmp_path / "net.py") + ":make"!r}]))
    """, block_torch=True)
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: the PyTorch frontend needs the 'torch' package, which is not installed; "
        "install it with: pip install 'edgeq[torch]'\n"
    )
