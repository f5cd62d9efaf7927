"""The mixed scheme's candidate formats, resolved from a config that has already checked itself.

``float`` is a candidate like the others (the matrix is kept as it is); fp16 is not, since this
scheme stores no half-precision weights. The option checks live in ``MixedPrecisionConfig``.
"""

from __future__ import annotations

from edgeq.quantize.config import MIXED_ALIASES, MIXED_FORMATS, Method, MixedPrecisionConfig

FLOAT = "float"  # the candidate that leaves a matrix as it is
FORMATS = MIXED_FORMATS


def resolve_candidates(config: MixedPrecisionConfig) -> list[str]:
    """The candidate formats in the user's order, aliases resolved, without repeats."""
    names: list[str] = []
    for raw in config.candidates:
        name = str(getattr(raw, "value", raw)).strip().lower()
        name = MIXED_ALIASES.get(name, name) or name
        if name not in names:
            names.append(name)
    return names


def check_config(config: MixedPrecisionConfig) -> Method:
    """The method of a config that validated itself on construction (kept as the handler's entry check)."""
    resolve_candidates(config)
    return Method(config.method)
