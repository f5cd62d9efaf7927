"""Atomic file and directory writes.

A run that fails must leave the user's files as they were, so every output is written to a
temporary sibling and renamed into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeq.errors import ConfigError

# Every output this process has put in place, in order: an interrupted command can say exactly
# what it left behind instead of guessing "nothing".
_COMMITTED: list[Path] = []


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM while outputs are renamed and recorded, so an interruption lands
    before the renames or after the record, never between (the message must say what exists)."""
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def committed_outputs() -> list[Path]:
    """The outputs renamed into place so far by this process (atomic writes and output sets)."""
    return list(_COMMITTED)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, directory: bool) -> None:
    """Give a temp file (0600) or dir (0700) the mode a plain open() / mkdir() would have given."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _as_if_created(tmp, directory=False)
        with _signals_deferred():
            os.replace(tmp, path)
            _COMMITTED.append(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in when complete.

    An existing directory at ``path`` is replaced only after the new one is fully written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _as_if_created(tmp, directory=True)
        with _signals_deferred():
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                old.rmdir()
                os.replace(path, old)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old, path)
                    raise
                _COMMITTED.append(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
                _COMMITTED.append(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path after links, or one inode (hard links)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting_inputs(outputs: dict[str, str | Path | None], inputs: list[str | Path]) -> None:
    """Raise ``ConfigError`` before any work when an output would replace one of the inputs.

    ``outputs`` maps the option that names each output (``-o``, ``--summary``) to its path;
    ``inputs`` lists every file the command reads (a model's external-data files included).
    Symlinks and hard links count as the same file, and so does an output folder that holds an
    input (a bundle written over the folder it is read from).
    """
    files = [Path(p) for p in inputs if p is not None and str(p)]
    named = [(option, Path(target)) for option, target in outputs.items() if target is not None and str(target)]
    for i, (option, out) in enumerate(named):
        for other, second in named[:i]:
            if _same_file(out, second):
                raise ConfigError(f"{option} {out}: {other} names the same file; give each output its own path")
    for option, target in outputs.items():
        if target is None or not str(target):
            continue
        out = Path(target)
        for source in files:
            if _same_file(out, source):
                raise ConfigError(f"{option} {out}: that is the input {source}; choose another output path")
            if out.is_dir() and not out.is_symlink() and source.resolve().is_relative_to(out.resolve()):
                raise ConfigError(f"{option} {out}: the folder holds the input {source}; choose another output path")


def check_output_paths(outputs: dict[str, str | Path | None], folders: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output that cannot be written: one line naming the option.

    A file output may not be an existing folder (``folders`` names the options that write a
    folder); its nearest existing parent must be a writable folder, not a file.
    """
    for option, target in outputs.items():
        if target is None or not str(target):
            continue
        out = Path(target)
        if option not in folders and out.is_dir():
            raise ConfigError(f"{option} {out}: is a folder; expected a file path")
        parent = out.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"{option} {out}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {out}: cannot write in {parent} (permission denied)")


def _file_target(final: str | Path) -> Path:
    """``final`` as a file output whose folder exists (created if needed); a folder is refused."""
    final = Path(final)
    if final.is_dir():
        raise ConfigError(f"{final}: is a folder; expected a file path")
    final.parent.mkdir(parents=True, exist_ok=True)
    return final


class OutputSet:
    """Several outputs of one command, committed together or not at all.

    Each ``path(final)`` gives a temporary sibling to write; ``commit`` renames them all into
    place, and if one rename fails the ones already renamed are put back as they were, so a
    failing run never leaves the model written without its summary (or an HTML without its JSON).
    Use it as a context manager: leaving the block with an exception removes every temporary.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []

    def path(self, final: str | Path) -> Path:
        final = _file_target(final)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self._pending.append((Path(tmp_name), final))
        return Path(tmp_name)

    def adopt(self, tmp: str | Path, final: str | Path) -> None:
        """Commit a file another writer staged (in a ``scratch_dir``) onto ``final`` with the rest."""
        self._pending.append((Path(tmp), Path(final)))

    def scratch_dir(self, final: str | Path) -> Path:
        """A temporary folder beside ``final`` (same file system, so renames are atomic), removed at the end."""
        final = _file_target(final)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        self._scratch.append(scratch)
        return scratch

    def commit(self) -> None:
        with _signals_deferred():
            self._commit()

    def _commit(self) -> None:
        done: list[tuple[Path, Path | None]] = []  # (final, backup of what it replaced)
        try:
            for tmp, final in self._pending:
                _as_if_created(tmp, directory=False)
                backup = None
                if final.exists():
                    backup = Path(tempfile.mkstemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent)[1])
                    os.replace(final, backup)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    if backup is not None:
                        os.replace(backup, final)
                    raise
                done.append((final, backup))
        except BaseException:
            for final, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, final)
                    else:
                        final.unlink()
            self.discard()
            raise
        _COMMITTED.extend(final for final, _ in done)
        for _, backup in done:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()
        self._pending = []
        self._remove_scratch()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        for scratch in self._scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        self._scratch = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()
