"""Importing the toolkit or the runtime must not load torch, tensorrt, paramiko or ray (in a fresh process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
import sys, importlib, pkgutil
import {package}
mods = [{package}]
if {walk}:
    for m in pkgutil.walk_packages({package}.__path__, prefix="{package}."):
        importlib.import_module(m.name)
heavy = sorted(m for m in ("torch", "tensorrt", "pynvml", "paramiko", "ray", "edgeq") if m in sys.modules and m != "{package}")
print(",".join(heavy))
"""


@pytest.mark.parametrize("package,walk", [("edgeq", False), ("edgeq_runtime", False), ("edgeq_runtime", True), ("edgeq.cli", False)])
def test_import_stays_light(package, walk):
    code = CHECK.format(package=package, walk=walk)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    forbidden = [m for m in out.split(",") if m and m in ("torch", "tensorrt", "pynvml", "paramiko", "ray")]
    if package.startswith("edgeq_runtime"):
        forbidden += [m for m in out.split(",") if m == "edgeq"]
    assert forbidden == [], f"import {package} loaded {forbidden}"


def test_runtime_source_never_imports_edgeq():
    root = Path(__file__).resolve().parents[2] / "runtime" / "edgeq_runtime"
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import edgeq\n", "from edgeq.", "from edgeq ")) or stripped.startswith(
                ("from edgeq_runtime", "import edgeq_runtime")
            ), f"{path}: {line}"
