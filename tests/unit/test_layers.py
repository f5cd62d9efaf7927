"""The layer table in ARCHITECTURE.md against the code's own imports.

Every module of ``edgeq/`` belongs to exactly one row of the table; an import (top-level or inside a
function) of a module in a higher row fails. The table is parsed from the document, so the picture
a reader sees and the rule the code follows cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 420


def layer_table() -> dict[str, int]:
    """Module prefix (dotted) -> layer number, from the ``## Layers`` table."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for name in re.findall(r"`([\w.]+)`", cells[1]):
            assert name not in table, f"ARCHITECTURE.md names {name} in two rows"
            table[name] = int(cells[0])
    assert table, "ARCHITECTURE.md has no layer table"
    return table


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "edgeq").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The row of the longest prefix of ``module`` (``edgeq`` itself only matches exactly)."""
    best: tuple[int, int] | None = None
    for prefix, layer in table.items():
        exact_only = prefix == "edgeq"
        matches = module == prefix or (not exact_only and module.startswith(prefix + "."))
        if matches and (best is None or len(prefix) > best[0]):
            best = (len(prefix), layer)
    return None if best is None else best[1]


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every edgeq import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from edgeq.x import y` where y is itself a module
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "edgeq" or name.startswith("edgeq.")]


def test_every_module_has_a_layer_and_every_row_exists():
    table = layer_table()
    mods = modules()
    unclaimed = [m for m in mods if layer_of(m, table) is None]
    assert unclaimed == [], f"modules no row of ARCHITECTURE.md claims: {unclaimed}"
    stale = [p for p in table if p not in mods]
    assert stale == [], f"ARCHITECTURE.md names modules that do not exist: {stale}"


def test_imports_only_point_down():
    table = layer_table()
    mods = modules()
    upward = []
    for module, path in mods.items():
        own = layer_of(module, table)
        assert own is not None
        for line, name in imported_modules(path, module):
            if name not in mods:  # `from edgeq.x import function`: the attribute, not a module
                continue
            target = layer_of(name, table)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {name} ({target})")
    assert upward == [], "imports that point up the stack:\n" + "\n".join(upward)


def test_runtime_never_imports_the_toolkit():
    for path in sorted((ROOT / "runtime" / "edgeq_runtime").rglob("*.py")):
        names = [n for _, n in imported_modules(path, "edgeq_runtime.x")]
        assert names == [], f"{path.relative_to(ROOT)} imports {names}"


@pytest.mark.parametrize("folder", ["edgeq", "runtime/edgeq_runtime"])
def test_no_module_is_too_long(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule itself: a graph module importing quantize would be caught."""
    table = layer_table()
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from edgeq.quantize.api import quantize\n")
    names = [n for _, n in imported_modules(probe, "edgeq.graph.probe")]
    assert "edgeq.quantize.api" in names
    assert layer_of("edgeq.quantize.api", table) > layer_of("edgeq.graph.probe", table)
