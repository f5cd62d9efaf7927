"""Helpers shared by the command modules: output formats and option parsing."""

from __future__ import annotations

import json
from typing import Any

import typer

from edgeq.errors import ConfigError


def echo_json(obj: Any) -> None:
    if hasattr(obj, "to_json"):
        typer.echo(obj.to_json())
    else:
        typer.echo(json.dumps(obj, indent=2))


def choice(value: str, allowed: list[str] | tuple[str, ...], option: str) -> str:
    """Validate an option value against a list, with an error that lists the choices."""
    if value not in allowed:
        raise ConfigError(f"{option}: unknown value {value!r}; expected one of {', '.join(allowed)}")
    return value
