"""What every torch-facing module of the frontend needs: torch itself, and torch's errors in one line.

torch is optional (``pip install 'edgeq[torch]'``), so it is imported only when a function needs
it and its absence is one ``MissingDependencyError`` naming the extra. torch wraps the real reason
for a failure in several layers of exceptions; ``root_cause`` digs it out for a one-line message.
"""

from __future__ import annotations

import re
from types import ModuleType

from edgeq.errors import MissingDependencyError


def import_torch() -> ModuleType:
    """The real ``torch`` module, or a one-line error naming the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch", "the PyTorch frontend") from None
    return torch


def root_cause(exc: BaseException) -> str:
    """First line of the innermost exception: the exporter wraps the real reason in several layers."""
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
