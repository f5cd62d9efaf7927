"""The ``edgeq`` command line: thin Typer commands over public library functions.

Each command lives in its own module in this package and registers itself on ``app`` when
imported; a new command is a new file. ``main`` turns any ``EdgeqError`` into one line on
stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from edgeq import __version__
from edgeq.errors import EdgeqError

app = typer.Typer(
    name="edgeq",
    help="Quantize a trained network for an edge board: calibrate, quantize, export, profile.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Order in which commands appear in --help; modules not listed come after, alphabetically.
COMMAND_ORDER = ["calibrate", "quantize", "export", "profile", "compare", "targets", "inspect"]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgeq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Quantize a trained network for an edge board: calibrate, quantize, export, profile."""


def _load_commands() -> None:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    ordered = [n for n in COMMAND_ORDER if n in names] + sorted(n for n in names if n not in COMMAND_ORDER)
    for name in ordered:
        importlib.import_module(f"{__name__}.{name}")


_load_commands()


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, standalone_mode=False)
        # With standalone_mode=False click returns Ctrl-C's exit code instead of raising.
        if isinstance(result, int) and result:
            if result == 130:
                typer.echo("error: interrupted; no output was written", err=True)
            return result
    except EdgeqError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("error: interrupted; no output was written", err=True)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except Exception as exc:  # click usage errors arrive as ClickException subclasses
        import click

        if isinstance(exc, click.exceptions.ClickException):
            typer.echo(f"error: {exc.format_message()}", err=True)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
