"""``edgeq boards check boards.toml``: reach every board and say what it can run."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli import app
from edgeq.cli._common import echo_json
from edgeq.errors import BoardError

boards_app = typer.Typer(help="Boards reached over SSH (boards.toml).", no_args_is_help=True)
app.add_typer(boards_app, name="boards")


@boards_app.command("check")
def check_command(
    inventory: Path = typer.Argument(..., help="The boards.toml inventory."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON instead of a table."),
) -> None:
    """Connect to each board: versions (JetPack, TensorRT, onnxruntime, Python), power sensors, free memory."""
    from edgeq.fleet.inventory import load_boards
    from edgeq.fleet.probe import check_boards, format_status_table

    statuses = check_boards(load_boards(inventory))
    if as_json:
        echo_json([s.to_dict() for s in statuses])
    else:
        typer.echo(format_status_table(statuses))
    down = [s.name for s in statuses if s.error]
    if down:
        raise BoardError(f"{inventory}: {len(down)} of {len(statuses)} board(s) unreachable: {', '.join(down)}")
