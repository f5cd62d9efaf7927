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


# Options that name one output *file*, per command. A value ending in "/" names a folder: Path()
# would drop the slash and write a file called like the folder, so it is refused on the raw argv.
FILE_OUTPUTS = {
    "quantize": ("-o", "--output", "--summary"),
    "calibrate": ("-o", "--output", "--trt-cache"),
    "profile": ("-o", "--output", "--json"),
    "compare": ("-o", "--output", "--json-out"),
}


def check_file_outputs(argv: list[str]) -> None:
    """``-o dir/`` where a file goes: one line, before the command runs."""
    command = next((a for a in argv if not a.startswith("-")), None)
    options = FILE_OUTPUTS.get(command or "", ())
    for i, arg in enumerate(argv):
        option, _, value = arg.partition("=")
        if option not in options:
            continue
        if not value and i + 1 < len(argv):
            value = argv[i + 1]
        if value.endswith(("/", "\\")):
            raise ConfigError(f"{option} {value}: ends with '/', so it names a folder; expected a file path")
