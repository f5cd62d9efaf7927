"""Atomic writes and hashing for the runtime.

A duplicate of the few helpers of ``edgeq.fileio`` the runtime needs: the runtime must not import
``edgeq``, and a half-written manifest or result on the board is worse than none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def _as_if_created(path: Path) -> None:
    """Give the temp file (0600) the mode a plain open() would have given under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        os.chmod(str(path), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="." + target.name + ".", suffix=".tmp", dir=str(target.parent))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _as_if_created(tmp)
        os.replace(str(tmp), str(target))
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return Path(path)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        block = handle.read(chunk)
        while block:
            digest.update(block)
            block = handle.read(chunk)
    return digest.hexdigest()


def names_an_input(output: PathLike, inputs: List[PathLike]) -> Optional[Path]:
    """The input that ``output`` would replace (same file through links, or inside an input folder)."""
    out = Path(output)
    for source in inputs:
        source = Path(source)
        try:
            if out.resolve() == source.resolve() or (out.exists() and source.exists() and os.path.samefile(out, source)):
                return source
            if source.is_dir() and str(out.resolve()).startswith(str(source.resolve()) + os.sep):
                return source
        except OSError:
            continue
    return None
