"""Putting things on a board: the runtime wheel (built here, installed there offline) and bundles.

Boards have no internet, so the runtime goes as a wheel built from this checkout's ``runtime/``
(``pip wheel --no-deps``, cached by the sources' sha256) and installed with ``--no-index
--no-deps`` into a venv at the board's ``runtime_path``. numpy and onnxruntime (and TensorRT, from
JetPack) are **not** copied: they are the board's own, made visible inside the venv
(``--system-site-packages`` plus a ``.pth`` naming the board Python's site-packages), because the
right onnxruntime for a Jetson is a JetPack-specific build no workstation can pick for it.
``edgeq boards check`` says when they are missing.

A bundle is copied file by file only where its sha256 differs from the copy already there, into
a temporary sibling (unchanged files hard-linked), verified there, and swapped in by rename: a
copy cut short leaves the previous bundle as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import BoardError, BoardLostError, ConfigError
from edgeq.fileio import atomic_directory, sha256_file
from edgeq.fleet import board_scripts
from edgeq.fleet.ssh import BoardConnection, Completed


def runtime_source() -> Path:
    """The ``runtime/`` folder (pyproject.toml + edgeq_runtime/) of this checkout."""
    import edgeq_runtime

    folder = Path(edgeq_runtime.__file__).resolve().parents[1]
    if not (folder / "pyproject.toml").is_file():
        raise ConfigError(
            f"{folder}: no pyproject.toml beside edgeq_runtime; remote runs need edgeq installed from its source "
            "checkout (the runtime wheel is built from runtime/)"
        )
    return folder


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeq" / "runtime-wheels"


def runtime_wheel() -> Path:
    """The runtime wheel for the current sources, built once and reused while they are unchanged."""
    source = runtime_source()
    digest = hashlib.sha256()
    files = [source / "pyproject.toml", *sorted((source / "edgeq_runtime").rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    folder = _cache_root() / digest.hexdigest()[:16]
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if wheels:
        return wheels[0]
    with atomic_directory(folder) as tmp:
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "--disable-pip-version-check", "-w", str(tmp), str(source)],
            capture_output=True, text=True,
        )
        if built.returncode or not list(tmp.glob("*.whl")):
            lines = [line for line in (built.stderr or built.stdout).splitlines() if line.strip()]
            raise ConfigError(f"{source}: building the runtime wheel failed: {lines[-1] if lines else built.returncode}")
    return sorted(folder.glob("*.whl"))[0]


def remote_call(conn: BoardConnection, script: str, *args: str, what: str, env: str = "") -> dict[str, Any]:
    """Run a board script and read its JSON line; a missing Python or a failure is one line."""
    python = shlex.quote(conn.board.python)
    quoted = " ".join(shlex.quote(a) for a in args)
    done: Completed = conn.run(f"env {env} {python} -c {shlex.quote(script)} {quoted}", what=what)
    if done.status == 127:
        raise BoardError(
            f"board {conn.board.label()}: no Python at {conn.board.python!r} (set python = ... in boards.toml)"
        )
    if done.status != 0:
        raise BoardError(f"board {conn.board.label()}: {what} failed: {done.last_error()}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        parsed = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BoardError(f"board {conn.board.label()}: {what} printed no result (is {conn.board.python} Python 3.8+?)") from None
    if not isinstance(parsed, dict):
        raise BoardError(f"board {conn.board.label()}: {what} printed an unexpected result")
    return parsed


def _mkdirs(conn: BoardConnection, path: str) -> None:
    done = conn.run(f"mkdir -p {shlex.quote(path)}", what=f"creating {path}")
    if done.status:
        raise BoardError(f"board {conn.board.label()}: cannot create {path}: {done.last_error()}")


def _check_space(conn: BoardConnection, free: int, needed: int, where: str) -> None:
    if needed > free:
        raise BoardError(
            f"board {conn.board.label()}: {free / 1e6:.2f} MB free under {where}, {needed / 1e6:.2f} MB needed; "
            "free some space there"
        )


def upload_wheel(conn: BoardConnection) -> tuple[str, str]:
    """The runtime wheel on the board (copied once per sha256): (remote path, sha256)."""
    wheel = runtime_wheel()
    digest = sha256_file(wheel)
    wheels = f"{conn.board.remote_root}/wheels"
    folder = f"{wheels}/{digest[:16]}"  # pip reads the wheel's name, so it keeps it
    remote = f"{folder}/{wheel.name}"
    known = remote_call(conn, board_scripts.SYNC, "hashes", wheels, what="reading the runtime folder")
    if known["files"].get(f"{digest[:16]}/{wheel.name}") != digest:
        _check_space(conn, int(known["free"]), wheel.stat().st_size, wheels)
        _mkdirs(conn, folder)
        conn.put(str(wheel), remote + ".part")
        done = conn.run(f"mv -f {shlex.quote(remote + '.part')} {shlex.quote(remote)}", what="placing the wheel")
        if done.status:
            raise BoardError(f"board {conn.board.label()}: cannot place {remote}: {done.last_error()}")
    return remote, digest


def ensure_runtime(conn: BoardConnection) -> str:
    """Install this checkout's runtime into the board's venv unless that exact wheel is there; the venv path."""
    from edgeq_runtime import __version__

    remote, digest = upload_wheel(conn)
    venv = f"{conn.board.remote_root}/venv"
    remote_call(conn, board_scripts.INSTALL, venv, remote, digest, __version__, what="installing the runtime")
    return venv


@dataclass
class SyncResult:
    remote_path: str
    sent: list[str]
    kept: list[str]


def sync_bundle(conn: BoardConnection, bundle: Path) -> SyncResult:
    """Copy ``bundle`` to ``<runtime_path>/bundles/<name>``: changed files only, swapped in atomically."""
    local = {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}
    wanted = {rel: sha256_file(path) for rel, path in local.items()}
    final = f"{conn.board.remote_root}/bundles/{bundle.name}"
    there = remote_call(conn, board_scripts.SYNC, "hashes", final, what="reading the bundle on the board")
    have: dict[str, str] = there["files"]
    kept = sorted(rel for rel, sha in wanted.items() if have.get(rel) == sha)
    sent = sorted(rel for rel in wanted if rel not in kept)
    _check_space(conn, int(there["free"]), sum(local[rel].stat().st_size for rel in sent), final)
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    _mkdirs(conn, f"{conn.board.remote_root}/bundles")
    remote_call(conn, board_scripts.SYNC, "stage", final, tmp, json.dumps(kept), json.dumps(sent), what="staging the bundle")
    try:
        for rel in sent:
            conn.put(str(local[rel]), f"{tmp}/{rel}")
        remote_call(conn, board_scripts.SYNC, "commit", final, tmp, json.dumps(wanted), what="checking the copied bundle")
    except BoardError as exc:
        if not isinstance(exc, BoardLostError):  # a live board: take the partial copy back
            with contextlib.suppress(BoardError):
                remote_call(conn, board_scripts.SYNC, "discard", final, tmp, what="removing the partial copy")
        raise
    return SyncResult(final, sent, kept)
