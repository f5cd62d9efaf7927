"""``sweep.toml``: a grid of quantization configs, expanded into one validated config per point.

    schema_version = 1
    [[grid]]                       # one table per scheme; every list is an axis, scalars are fixed
    scheme = "weight_only"         # weight_only | int8 | mixed
    weights = ["int4", "int8"]
    block_size = [32, 128]
    method = ["rtn", "hqq"]

    [options]                      # optional: how much data and how long each profile runs
    samples = 32                   # calibration and accuracy samples
    iterations = 100               # profile iterations per board
    warmup = 10

Each point becomes the scheme's own config dataclass, so a typo or an impossible combination is
refused with the grid table's number before anything runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError, EdgeqError
from edgeq.serialization import load_toml

OPTIONS = {"samples": int, "batch_size": int, "iterations": int, "warmup": int, "idle_s": float, "energy": str}


def scheme_configs() -> dict[str, type]:
    from edgeq.quantize.config import Int8Config, MixedPrecisionConfig, WeightOnlyConfig

    return {"weight_only": WeightOnlyConfig, "int8": Int8Config, "mixed": MixedPrecisionConfig}


@dataclass(frozen=True)
class SweepGrid:
    """The expanded grid: the configs in order, and the run options."""

    configs: tuple[Any, ...]
    options: dict[str, Any]
    source: str


def expand(tables: list[dict[str, Any]], source: str) -> list[Any]:
    """Every point of every ``[[grid]]`` table as a config object, duplicates dropped (first kept)."""
    import dataclasses

    schemes = scheme_configs()
    configs: list[Any] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        where = f"{source}: [[grid]] #{number}"
        if not isinstance(table, dict) or "scheme" not in table:
            raise ConfigError(f"{where}: needs scheme = one of {', '.join(schemes)}")
        scheme = table["scheme"]
        if scheme not in schemes:
            raise ConfigError(f"{where}: unknown scheme {scheme!r}; expected one of {', '.join(schemes)}")
        cls = schemes[scheme]
        fields = {f.name for f in dataclasses.fields(cls)}
        axes = {k: v for k, v in table.items() if k != "scheme"}
        unknown = sorted(set(axes) - fields)
        if unknown:
            raise ConfigError(f"{where}: {scheme} has no option {unknown[0]!r}; expected some of {', '.join(sorted(fields))}")
        names = list(axes)
        values = [v if isinstance(v, list) else [v] for v in axes.values()]
        if any(not v for v in values):
            raise ConfigError(f"{where}: an empty list gives no configs")
        for combo in itertools.product(*values):
            params = dict(zip(names, combo, strict=True))
            try:
                config = cls(**params)
            except EdgeqError as exc:
                raise ConfigError(f"{where} {params}: {exc}") from None
            except TypeError as exc:
                raise ConfigError(f"{where} {params}: {exc}") from None
            key = config.to_json(indent=None)
            if key not in seen:
                seen.add(key)
                configs.append(config)
    return configs


def load_grid(path: str | Path) -> SweepGrid:
    path = Path(path)
    doc = load_toml(path, f"--grid {path}: file not found")
    if doc.get("schema_version", 1) != 1:
        raise ConfigError(f"{path}: schema_version {doc.get('schema_version')!r}; this edgeq reads 1")
    extra = sorted(set(doc) - {"schema_version", "grid", "options"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r}; expected [[grid]] tables and [options]")
    tables = doc.get("grid")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[grid]] tables")
    options = doc.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: [options] must be a table")
    for key, value in options.items():
        kind = OPTIONS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: [options] has no {key!r}; expected some of {', '.join(OPTIONS)}")
        if key == "energy":
            if value not in ("auto", "none"):
                raise ConfigError(f"{path}: [options] energy = {value!r}; expected auto or none")
            continue
        number = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
        if not number or isinstance(value, bool) or value < (0 if kind is float else 1):
            raise ConfigError(f"{path}: [options] {key} = {value!r}; expected a positive {kind.__name__}")
    return SweepGrid(tuple(expand(tables, str(path))), dict(options), str(path))
