"""``edgeq boards check``: what each board has, and what it can run against its target profile.

The probe is a standard-library script run with the board's Python (``board_scripts.PROBE``);
power sensors are found by the runtime's own discovery, imported from the runtime wheel placed on
``PYTHONPATH`` (a wheel is a zip Python imports from), so the check installs nothing. JetPack is
read from ``/etc/nv_tegra_release`` (the L4T release) and named through NVIDIA's L4T table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgeq.errors import BoardError, EdgeqError
from edgeq.fleet.inventory import Board, Inventory
from edgeq.serialization import Serializable

# L4T release -> JetPack, from NVIDIA's Jetson software archive (developer.nvidia.com/embedded/jetpack-archive).
L4T_JETPACK: dict[str, str] = {
    "32.6": "4.6", "32.7": "4.6",
    "35.1": "5.0", "35.2": "5.1", "35.3": "5.1", "35.4": "5.1", "35.5": "5.1", "35.6": "5.1",
    "36.2": "6.0", "36.3": "6.0", "36.4.0": "6.1", "36.4": "6.2",
    "38.2": "7.0",
}
_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def parse_l4t(text: str | None) -> tuple[str | None, str | None]:
    """``/etc/nv_tegra_release`` → (L4T version "36.4.3", JetPack "6.2"), or Nones."""
    match = _RELEASE.search(text or "")
    if match is None:
        return None, None
    l4t = f"{match.group(1)}.{match.group(2)}"
    parts = l4t.split(".")
    for key in (l4t, ".".join(parts[:3]), ".".join(parts[:2])):
        if key in L4T_JETPACK:
            return l4t, L4T_JETPACK[key]
    return l4t, None


@dataclass
class BoardStatus(Serializable):
    """One board's answer to the check (``error`` set when it could not be reached or probed)."""

    schema_type = "edgeq.BoardStatus"
    schema_version = 1

    name: str
    address: str
    target: str
    error: str | None = None
    python: str | None = None
    hostname: str | None = None
    machine: str | None = None
    l4t: str | None = None
    jetpack: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    power: str | None = None
    power_reason: str | None = None
    mem_available_bytes: int | None = None
    disk_free_bytes: int | None = None
    runtime_installed: str | None = None
    can_run: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _capabilities(board: Board, status: BoardStatus) -> None:
    """Fill ``can_run`` / ``problems``: the target's precisions this board's software can run."""
    from edgeq.targets import load_target

    try:
        profile = load_target(board.target)
    except EdgeqError as exc:
        status.problems.append(str(exc))
        return
    packages = status.packages
    missing = [name for name in ("numpy", "onnxruntime") if not packages.get(name)]
    if missing:
        status.problems.append(f"{', '.join(missing)} not installed for {board.python}; the runtime needs them")
        return
    status.can_run.append(f"onnxruntime {packages['onnxruntime']}")
    trt = packages.get("tensorrt")
    if profile.tensorrt is None:
        status.can_run.append("precisions " + ", ".join(profile.allowed_precisions()))
        return
    jetpack = status.jetpack if status.jetpack in profile.tensorrt.jetpack else None
    if status.jetpack and jetpack is None:
        status.problems.append(f"JetPack {status.jetpack} is not one {profile.name} lists ({', '.join(profile.tensorrt.jetpack)})")
    if not trt:
        expected = profile.tensorrt.version(jetpack)[1]
        status.problems.append(f"no TensorRT for {board.python} ({profile.name} expects {expected}): onnxruntime bundles only")
        return
    status.can_run.append(f"TensorRT {trt}: " + ", ".join(profile.allowed_precisions(jetpack)))
    if jetpack is not None:
        expected = profile.tensorrt.version(jetpack)[1]
        if trt.split(".")[:2] != expected.split(".")[:2]:
            status.problems.append(f"TensorRT {trt} differs from JetPack {jetpack}'s {expected}")


def check_board(board: Board) -> BoardStatus:
    """Connect, probe and judge one board; a failure is recorded in ``error``, not raised."""
    from edgeq.fleet.board_scripts import PROBE
    from edgeq.fleet.deploy import remote_call, upload_wheel
    from edgeq.fleet.ssh import BoardConnection

    status = BoardStatus(name=board.name, address=str(board.address), target=board.target)
    try:
        with BoardConnection(board) as conn:
            wheel, _ = upload_wheel(conn)
            found: dict[str, Any] = remote_call(
                conn, PROBE, board.sysfs_root, board.remote_root, what="the probe", env=f"PYTHONPATH={wheel}"
            )
    except BoardError as exc:
        status.error = str(exc)
        return status
    status.python = found.get("python")
    status.hostname = found.get("hostname")
    status.machine = found.get("machine")
    status.l4t, status.jetpack = parse_l4t(found.get("nv_tegra_release"))
    status.packages = dict(found.get("packages") or {})
    status.power, status.power_reason = found.get("power"), found.get("power_reason")
    status.mem_available_bytes = found.get("mem_available_bytes")
    status.disk_free_bytes = found.get("disk_free_bytes")
    installed = found.get("runtime_installed")
    status.runtime_installed = installed.get("version") if isinstance(installed, dict) else None
    _capabilities(board, status)
    return status


def check_boards(inventory: Inventory) -> list[BoardStatus]:
    """``edgeq boards check``: every board in the inventory, in its order."""
    return [check_board(board) for board in inventory.boards]


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f} GB"


def format_status_table(statuses: list[BoardStatus]) -> str:
    """The check as a table, then one line per board of what it can run and what is wrong."""
    from edgeq.targets.text import text_table

    rows: list[tuple[str, ...]] = [("board", "address", "target", "python", "jetpack", "tensorrt", "onnxruntime", "power", "free mem")]
    for s in statuses:
        if s.error:
            rows.append((s.name, s.address, s.target, "-", "-", "-", "-", "-", "-"))
            continue
        jetpack = f"{s.jetpack} (L4T {s.l4t})" if s.jetpack else (f"L4T {s.l4t}" if s.l4t else "none")
        rows.append((
            s.name, s.address, s.target, s.python or "-", jetpack, s.packages.get("tensorrt") or "none",
            s.packages.get("onnxruntime") or "none", s.power or "none", _gb(s.mem_available_bytes),
        ))
    lines = text_table(rows)
    for s in statuses:
        if s.error:
            lines.append(f"{s.name}: unreachable: {s.error}")
            continue
        lines.append(f"{s.name}: can run {'; '.join(s.can_run) or 'nothing yet'}")
        if not s.power:
            lines.append(f"{s.name}: no energy numbers: {s.power_reason}")
        lines.extend(f"{s.name}: {p}" for p in s.problems)
    return "\n".join(lines)
