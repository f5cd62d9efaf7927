"""Fresh names for tensors and nodes: never colliding with the graph's own, nor with each other.

Summaries, plans and the quantization summary refer to nodes by name, so every rewrite that adds
a node or a tensor takes its name from here.
"""

from __future__ import annotations

from collections.abc import Sequence


class FreshNames:
    """Names that never collide with ``taken`` (nor with each other): ``base``, else ``base_<n>``."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        name = base
        suffix = 1
        while name in self.taken:
            name = f"{base}_{suffix}"
            suffix += 1
        self.taken.add(name)
        return name


def unique_node_names(nodes: Sequence[tuple[str, str]]) -> list[str]:
    """For ``(name, op_type)`` of each node in order: a name for each, unique in the graph.

    Named nodes keep their names (the first of duplicates does); the others get
    ``<op_type>_<position>`` (or ``<name>_<n>``) with a suffix when that is taken.
    """
    seen: set[str] = set()
    taken = {name for name, _ in nodes if name}
    result: list[str] = []
    for index, (current, op_type) in enumerate(nodes):
        if current and current not in seen:
            seen.add(current)
            result.append(current)
            continue
        base = current or f"{op_type}_{index}"
        name = base
        suffix = 1
        while name in seen or (name != current and name in taken):
            name = f"{base}_{suffix}"
            suffix += 1
        seen.add(name)
        taken.add(name)
        result.append(name)
    return result
