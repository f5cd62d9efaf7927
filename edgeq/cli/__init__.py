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
COMMAND_ORDER = ["calibrate", "quantize", "export", "profile", "compare", "sweep", "boards", "targets", "inspect"]


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


def _usage_exceptions() -> tuple[type[BaseException], ...]:
    """click's exceptions and typer's vendored copies of them: typer raises the latter."""
    import click

    types: list[type[BaseException]] = [click.exceptions.ClickException]
    try:
        from typer._click import exceptions as vendored
    except ImportError:  # a typer that uses click itself
        return tuple(types)
    return (*types, vendored.ClickException)


def usage_line(exc: BaseException) -> str:
    """One line for a usage error: the command, what was wrong, where help is."""
    message = " ".join(str(getattr(exc, "format_message", lambda: str(exc))()).split())
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", "") if ctx is not None else ""
    if command:
        return f"{command}: {message} (see '{command} --help')"
    return message


def interrupted_line(since: int = 0) -> str:
    """What an interruption left behind, exactly: the outputs this run put in place, or none."""
    from edgeq.fileio import committed_outputs

    written = committed_outputs()[since:]
    if not written:
        return "error: interrupted; no output was written"
    return "error: interrupted after writing " + ", ".join(str(p) for p in written)


def _terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so temporaries are removed and half a set of outputs is taken back."""
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the app; every failure is one ``error:`` line on stderr (exit 2, 130 on Ctrl-C or SIGTERM)."""
    from edgeq.fileio import committed_outputs

    usage_errors = _usage_exceptions()
    _terminate_as_interrupt()
    mark = len(committed_outputs())  # main() may run many times in one process (tests, scripts)
    try:
        from edgeq.cli._common import check_file_outputs

        check_file_outputs(list(sys.argv[1:] if argv is None else argv))
        result = app(args=argv, prog_name="edgeq", standalone_mode=False)
        # With standalone_mode=False click returns Ctrl-C's exit code instead of raising.
        if isinstance(result, int) and result:
            if result == 130:
                typer.echo(interrupted_line(mark), err=True)
            return result
    except EdgeqError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo(interrupted_line(mark), err=True)
        return 130
    except OSError as exc:  # the disk or the file system said no (full, read-only, permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group or command called bare: its help
            typer.echo(exc.format_message() if hasattr(exc, "format_message") else str(exc))
            return 2
        typer.echo(f"error: {usage_line(exc)}", err=True)
        return 2
    return 0

if __name__ == "__main__":
    sys.exit(main())
