"""Size options bounded by the model, checked before anything is allocated in proportion to them.

A block larger than every row would pad each row to the block (``--block-size 1048576`` on a
384-wide model asks for gigabytes per matrix); no block beyond the widest reduction axis, rounded
up to the next power of two, changes a single stored value, so that is the bound.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeq.errors import ConfigError
from edgeq.graph.passes.weight_only import WeightTarget


def block_size_bound(targets: Sequence[WeightTarget]) -> int:
    """The largest block that means anything for these matrices: the widest row, as a power of two."""
    widest = max((t.cols for t in targets), default=16)
    return max(16, 1 << max(0, widest - 1).bit_length())


def check_block_size_fits(block_size: int, targets: Sequence[WeightTarget]) -> None:
    """One line naming the bound when ``--block-size`` exceeds it."""
    if not targets:
        return
    bound = block_size_bound(targets)
    if block_size > bound:
        widest = max(t.cols for t in targets)
        raise ConfigError(
            f"--block-size: {block_size} is larger than every row of this model (the widest has {widest} weights); "
            f"at most {bound}"
        )
