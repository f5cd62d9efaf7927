"""The mixed scheme's options, checked before anything is measured: candidate formats, budget, block.

``float`` is a candidate like the others (the matrix is kept as it is); fp16 is not, since this
scheme stores no half-precision weights.
"""

from __future__ import annotations

import math
import re

from edgeq.errors import ConfigError
from edgeq.quantize.config import Method, MixedPrecisionConfig

FLOAT = "float"  # the candidate that leaves a matrix as it is
FORMATS = ("int2", "int4", "int8", "nf4", "fp4", FLOAT)
ALIASES = {"fp32": FLOAT, "float32": FLOAT, "fp16": None, "float16": None}


def resolve_candidates(config: MixedPrecisionConfig) -> list[str]:
    """The candidate formats, validated, in the user's order without repeats."""
    names: list[str] = []
    for raw in config.candidates:
        name = str(getattr(raw, "value", raw)).strip().lower()
        if name in ALIASES:
            alias = ALIASES[name]
            if alias is None:
                raise ConfigError(
                    f"--candidates: {name} is not a stored format here; use 'float' to allow keeping a matrix as it is"
                )
            name = alias
        if name not in FORMATS:
            raise ConfigError(f"--candidates: unknown format {raw!r}; expected some of {', '.join(FORMATS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("--candidates: give at least one format, e.g. int2,int4,int8")
    return names


def check_config(config: MixedPrecisionConfig) -> Method:
    """One-line refusals for the options, before anything is measured; returns the method."""
    try:
        method = Method(getattr(config.method, "value", config.method))
    except ValueError:
        raise ConfigError(f"--method: unknown value {config.method!r}; expected one of {', '.join(m.value for m in Method)}") from None
    if (config.budget_bytes is None) == (config.avg_bits is None):
        raise ConfigError("mixed precision needs exactly one of --budget (bytes) or --avg-bits")
    if config.budget_bytes is not None and config.budget_bytes <= 0:
        raise ConfigError(f"--budget: {config.budget_bytes} bytes is not a positive size")
    if config.avg_bits is not None and not (math.isfinite(config.avg_bits) and config.avg_bits > 0):
        raise ConfigError(f"--avg-bits: {config.avg_bits} is not a positive number of bits")
    if config.block_size < 16 or config.block_size & (config.block_size - 1):
        raise ConfigError(f"--block-size: {config.block_size} is not a power of two >= 16")
    if config.exclude:
        try:
            re.compile(config.exclude)
        except re.error as exc:
            raise ConfigError(f"--exclude: {config.exclude!r} is not a valid regular expression ({exc})") from None
    resolve_candidates(config)
    return method
