"""``edgeq profile BUNDLE --board NAME``: the same benchmark as a local profile, run on a board.

Steps: connect (host key checked), copy the bundle (changed files only, swapped in atomically),
make sure this checkout's runtime is installed there, run ``edgeq-run bench`` with the board's
venv, stream its output lines back, read its JSON and delete it on the board. Ctrl-C stops the
remote process; a board that drops mid-run raises ``BoardLostError`` (one line) and, since the
result is only returned after it was read whole, nothing half-written reaches the user's files.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeq.errors import BoardError, ModelLoadError
from edgeq.fleet.inventory import Board
from edgeq.profile import BenchOptions, bundle_target


def profile_on_board(
    bundle: str | Path,
    board: Board,
    options: BenchOptions | None = None,
    on_line: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark a bundle folder on ``board``; the runtime's result dict, naming the board.

    ``device.board`` and ``device.ssh`` say where it ran; ``target`` is the bundle's target.
    ``on_line`` receives the remote run's output as it comes (progress, the result table).
    """
    from edgeq.fleet.deploy import ensure_runtime, sync_bundle
    from edgeq.fleet.ssh import BoardConnection

    bundle = Path(bundle)
    if not (bundle / "manifest.json").is_file():
        raise ModelLoadError(f"{bundle}: not a bundle folder (no manifest.json); remote profiles run bundles from edgeq export")
    arguments = (options or BenchOptions()).run_arguments()
    say = on_line or (lambda line: None)
    with BoardConnection(board) as conn:
        say(f"{board.name}: connected to {board.address}")
        copied = sync_bundle(conn, bundle)
        say(f"{board.name}: bundle {copied.remote_path}: {len(copied.sent)} file(s) sent, {len(copied.kept)} unchanged")
        venv = ensure_runtime(conn)
        results = f"{board.remote_root}/results"
        remote_json = f"{results}/{uuid.uuid4().hex}.json"
        command = " ".join(shlex.quote(a) for a in [
            f"{venv}/bin/edgeq-run", "bench", copied.remote_path, "--json", remote_json,
            "--power-root", board.sysfs_root, *arguments,
        ])
        conn.run(f"mkdir -p {shlex.quote(results)}", what="creating the results folder")
        say(f"{board.name}: running edgeq-run bench")
        done = conn.run(command, on_line=lambda line: say(f"{board.name}| {line}"), what="the benchmark")
        try:
            if done.status != 0:
                raise BoardError(f"board {board.label()}: edgeq-run bench failed: {done.last_error()}")
            raw = conn.read_bytes(remote_json)
        finally:
            conn.run(f"rm -f {shlex.quote(remote_json)}", what="removing the remote result")
    try:
        data: dict[str, Any] = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BoardError(f"board {board.label()}: the benchmark's JSON {remote_json} is not readable") from None
    data.setdefault("device", {})
    data["device"]["board"] = board.name
    data["device"]["ssh"] = str(board.address)
    target = bundle_target(bundle)
    if target and not data.get("target"):
        data["target"] = target
    return data
