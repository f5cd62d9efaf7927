"""Usage errors are one line on stderr and exit status 2, for every command (issue: no tracebacks).

The commands and their numeric options are read from the Typer app itself, so a new command or
option is covered without editing this file.
"""

from __future__ import annotations

import pytest
import typer

from edgeq.cli import app, main


def commands() -> dict[str, object]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def numeric_options(command: object) -> list[str]:
    """Options whose annotation is int or float (``Optional`` ones included)."""
    import typing

    names = []
    for param in command.params:  # type: ignore[attr-defined]
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        kinds = set(typing.get_args(annotation)) | {annotation}
        if param.opts and param.opts[0].startswith("-") and kinds & {int, float}:
            names.append(param.opts[0])
    return names


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(commands()))
def test_bare_command_is_one_line_or_runs(name, capsys):
    required = [p for p in commands()[name].params if p.required]  # type: ignore[attr-defined]
    code, err = run(capsys, [name])
    if required:
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: edgeq {name}:"), err
        assert "--help" in err[0]
    else:
        assert code in (0, 2) and len(err) <= 1


@pytest.mark.parametrize("name", sorted(commands()))
def test_unknown_option_is_one_line(name, capsys):
    code, err = run(capsys, [name, "--no-such-option"])
    assert code == 2 and len(err) == 1 and "--no-such-option" in err[0], err


@pytest.mark.parametrize("name,option", [(n, o) for n, c in sorted(commands().items()) for o in numeric_options(c)])
def test_non_number_is_one_line(name, option, capsys):
    code, err = run(capsys, [name, "model.onnx", option, "abc"])
    assert code == 2 and len(err) == 1 and option in err[0], err


def test_unknown_command_is_one_line(capsys):
    code, err = run(capsys, ["no-such-command"])
    assert code == 2 and err == ["error: edgeq: No such command 'no-such-command'. (see 'edgeq --help')"]


def test_some_command_has_a_numeric_option():
    """The non-number test above must not be vacuous."""
    assert any(numeric_options(c) for c in commands().values())


def test_an_interruption_names_only_this_runs_outputs(tmp_path, capsys, monkeypatch):
    """main() runs many times in one process: an earlier run's outputs are not this run's."""
    from edgeq import fileio
    from edgeq.cli import interrupted_line

    fileio.atomic_write_text(tmp_path / "earlier.json", "{}")
    mark = len(fileio.committed_outputs())
    assert interrupted_line(mark) == "error: interrupted; no output was written"
    fileio.atomic_write_text(tmp_path / "now.json", "{}")
    assert interrupted_line(mark) == f"error: interrupted after writing {tmp_path / 'now.json'}"
