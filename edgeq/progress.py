"""One progress bar for every long step, on stderr so stdout stays parseable (``--json``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(total: int, enabled: bool, description: str) -> Iterator[Any]:
    """A rich progress bar with one task, or None when disabled or there is nothing to count."""
    if not enabled or total == 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        bar.add_task(description, total=total)
        yield bar
