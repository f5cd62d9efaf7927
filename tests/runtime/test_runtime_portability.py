"""The runtime goes on JetPack 5 boards: Python 3.8, no edgeq, no torch.

vermin checks the syntax and library calls statically; where a real Python 3.8 is installed, it
compiles every module and runs the stdlib-only parts (manifest, power discovery) for real.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import edgeq_runtime
import pytest
import sysfs_boards as boards
from rt_helpers import make_bundle

PACKAGE = Path(edgeq_runtime.__file__).resolve().parent


def python38() -> str | None:
    """A Python 3.8 interpreter, if this machine has one (pyenv or system)."""
    candidates = [shutil.which("python3.8") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    candidates += ["/usr/bin/python3.8", "/usr/local/bin/python3.8"]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def test_vermin_says_python_3_8():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (it is in edgeq[dev])")
    done = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", str(PACKAGE)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Incompatible versions:     2.x" in done.stdout or "Minimum required versions" in done.stdout


@pytest.fixture(scope="module")
def py38() -> str:
    interpreter = python38()
    if interpreter is None:
        pytest.skip("no Python 3.8 interpreter on this machine (vermin still checks 3.8 syntax)")
    return interpreter


def test_every_module_compiles_on_python_3_8(py38):
    files = sorted(str(p) for p in PACKAGE.rglob("*.py"))
    script = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f, encoding='utf-8').read(), f, 'exec')\nprint(len(sys.argv) - 1)"
    done = subprocess.run([py38, "-c", script, *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(files) > 15


def test_manifest_and_power_discovery_run_on_python_3_8(py38, tmp_path):
    """These parts need only the standard library, so a bare 3.8 runs them (no numpy there)."""
    bundle = make_bundle(tmp_path / "bundle")
    boards.agx_orin(tmp_path / "board")
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from edgeq_runtime.manifest import Manifest, verify_bundle
        from edgeq_runtime.power import discover
        manifest = Manifest.read(sys.argv[2])
        print(manifest.inputs[0].name, verify_bundle(sys.argv[2]))
        source, reason = discover(sys.argv[3])
        print(source.name, round(source.total(source.read()), 6))
        heavy = [m for m in ("numpy", "onnxruntime", "edgeq", "torch") if m in sys.modules]
        print(heavy)
        """
    )
    done = subprocess.run([py38, "-c", script, str(PACKAGE.parent), str(bundle), str(tmp_path / "board")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["x []", "ina3221-hwmon 9.0", "[]"]
