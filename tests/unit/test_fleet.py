"""edgeq.fleet without a network: boards.toml validation, sweep grids, the Pareto choice, L4T names."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import ConfigError
from edgeq.fleet.grid import load_grid
from edgeq.fleet.inventory import board_from_url, load_boards, parse_ssh_url
from edgeq.fleet.pareto import Constraints, annotate, front, pick
from edgeq.fleet.probe import parse_l4t
from edgeq.fleet.sweep import job_name
from edgeq.quantize.config import Int8Config, WeightOnlyConfig

BOARD = '[[board]]\nname = "orin"\nssh = "ssh://ubuntu@orin.lan:2222"\ntarget = "jetson-orin-nano"\n'


def _write(tmp_path: Path, text: str, name: str = "boards.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_boards_toml_reads_and_defaults(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("not read here")
    inv = load_boards(_write(tmp_path, BOARD + f'key_file = "{key}"\njump = "ssh://me@bastion"\n'))
    board = inv.get("orin")
    assert (board.address.user, board.address.host, board.address.port) == ("ubuntu", "orin.lan", 2222)
    assert board.jump_address is not None and board.jump_address.port == 22
    assert board.python == "python3" and board.runtime_path == "edgeq-runtime" and board.sysfs_root == "/"
    assert board.known_hosts_path == Path("~/.ssh/known_hosts").expanduser()
    again = type(inv).from_json(inv.to_json())
    assert again.boards == inv.boards


@pytest.mark.parametrize(
    "extra, message",
    [
        ('password = "hunter2"\n', "'password' is refused"),
        ('ssh_passphrase = "x"\n', "is refused"),
        ('colour = "red"\n', "unknown field 'colour'"),
        ('key_file = "/no/such/key"\n', "key_file /no/such/key does not exist"),
        ('sysfs_root = "relative"\n', "sysfs_root must be an absolute path"),
        ('jump = "http://bastion"\n', "not an ssh://user@host:port address"),
    ],
)
def test_boards_toml_refuses_bad_boards(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_boards(_write(tmp_path, BOARD + extra))
    assert "hunter2" not in str(info.value)


def test_boards_toml_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        load_boards(_write(tmp_path, BOARD + BOARD))
    with pytest.raises(ConfigError, match="no \\[\\[board\\]\\] tables"):
        load_boards(_write(tmp_path, "schema_version = 1\n"))
    with pytest.raises(ConfigError, match="schema_version 2"):
        load_boards(_write(tmp_path, "schema_version = 2\n" + BOARD))
    with pytest.raises(ConfigError, match="has no board 'nano'; it has orin"):
        load_boards(_write(tmp_path, BOARD)).get("nano")


def test_ssh_urls() -> None:
    with pytest.raises(ConfigError, match="carries a password"):
        parse_ssh_url("ssh://u:pw@h:22", "--board")
    with pytest.raises(ConfigError, match="names no user"):
        parse_ssh_url("ssh://h:22", "--board")
    board = board_from_url("ssh://u@10.1.2.3:2200?python=/usr/bin/python3.8&sysfs_root=/", default_target="x86-cpu")
    assert board.name == "10.1.2.3-2200" and board.python == "/usr/bin/python3.8" and board.target == "x86-cpu"
    with pytest.raises(ConfigError, match="unknown URL option 'colour'"):
        board_from_url("ssh://u@h?colour=red", default_target="x86-cpu")
    with pytest.raises(ConfigError, match="refused"):
        board_from_url("ssh://u@h?password=x", default_target="x86-cpu")


@pytest.mark.parametrize(
    "text, l4t, jetpack",
    [
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", "36.4.3", "6.2"),
        ("# R36 (release), REVISION: 4.0, GCID: 37537400", "36.4.0", "6.1"),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178", "35.4.1", "5.1"),
        ("# R32 (release), REVISION: 7.1, GCID: 29818004", "32.7.1", "4.6"),
        ("# R99 (release), REVISION: 1.0", "99.1.0", None),
        ("", None, None),
    ],
)
def test_l4t_release_names_jetpack(text: str, l4t: str | None, jetpack: str | None) -> None:
    assert parse_l4t(text) == (l4t, jetpack)


def test_grid_expands_every_axis_into_validated_configs(tmp_path: Path) -> None:
    grid = load_grid(_write(tmp_path, (
        '[[grid]]\nscheme = "weight_only"\nweights = ["int4", "int8"]\nblock_size = [32, 64, 128]\nmethod = "rtn"\n'
        '[[grid]]\nscheme = "int8"\nlayout = ["tensorrt", "onnxruntime"]\n'
        '[[grid]]\nscheme = "weight_only"\nweights = "int4"\nblock_size = 32\n'  # a duplicate: dropped
        "[options]\nsamples = 4\niterations = 10\nidle_s = 0\n"
    ), "sweep.toml"))
    expected = [WeightOnlyConfig(weights=w, block_size=b) for w, b in itertools.product(["int4", "int8"], [32, 64, 128])]
    expected += [Int8Config(layout="tensorrt"), Int8Config(layout="onnxruntime")]
    assert list(grid.configs) == expected
    assert grid.options == {"samples": 4, "iterations": 10, "idle_s": 0}
    assert job_name(expected[1]) == "weight_only int4 b64" and job_name(expected[-1]) == "int8 layout=onnxruntime"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[grid]]\nscheme = "fp8"\n', "unknown scheme 'fp8'"),
        ('[[grid]]\nscheme = "weight_only"\nblocksize = [32]\n', "no option 'blocksize'"),
        ('[[grid]]\nscheme = "weight_only"\nblock_size = [32, 48]\n', "#1 \\{'block_size': 48\\}: --block-size: 48"),
        ('[[grid]]\nscheme = "weight_only"\nweights = []\n', "empty list"),
        ('[[grid]]\nscheme = "int8"\n[options]\nsamples = 0\n', "samples = 0"),
        ('[[grid]]\nscheme = "int8"\n[options]\nrepeat = 3\n', "no 'repeat'"),
    ],
)
def test_grid_errors_name_the_table(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_grid(_write(tmp_path, text, "sweep.toml"))


def _pt(name: str, acc: float, size: float, lat: float, energy: float | None) -> dict:
    return {"name": name, "accuracy": acc, "file_bytes": size, "latency_ms": lat, "energy_mj": energy}


KNOWN = [
    _pt("a", 0.99, 20e6, 5.0, 2.0),
    _pt("b", 0.95, 10e6, 4.0, 1.5),
    _pt("c", 0.94, 12e6, 4.5, 1.6),  # worse than b on every axis
    _pt("d", 0.99, 20e6, 5.0, 2.0),  # the same as a: neither beats the other
    _pt("e", 0.90, 8e6, 6.0, 3.0),  # the smallest
    _pt("f", 0.99, 21e6, 5.0, 2.0),  # a, but larger
    _pt("g", 0.97, 20e6, 5.0, 1.0),  # less accurate than a, but the most frugal
]


def test_pareto_front_on_known_points() -> None:
    assert [p["name"] for p, on in zip(KNOWN, front(KNOWN), strict=True) if on] == ["a", "b", "d", "e", "g"]
    # Without energy on one point the axis is dropped for all: g is then beaten by a.
    partial = [*KNOWN[:-1], {**KNOWN[-1], "energy_mj": None}]
    assert [p["name"] for p, on in zip(partial, front(partial), strict=True) if on] == ["a", "b", "d", "e"]


def test_pareto_front_against_brute_force_numpy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        values = rng.integers(0, 5, size=(25, 4)).astype(float)  # small integers: many ties
        points = [_pt(str(i), *row) for i, row in enumerate(values)]
        costs = values * np.array([-1.0, 1.0, 1.0, 1.0])
        le = (costs[:, None, :] <= costs[None, :, :]).all(-1)
        lt = (costs[:, None, :] < costs[None, :, :]).any(-1)
        dominated = (le & lt).any(0)  # [j, i]: j beats i; any over j
        assert front(points) == list(~dominated)


def test_pick_under_constraints() -> None:
    assert KNOWN[pick(KNOWN, Constraints())]["name"] == "a"  # accuracy first, then smaller size: a before d, f
    assert KNOWN[pick(KNOWN, Constraints(max_size_bytes=15e6))]["name"] == "b"
    assert KNOWN[pick(KNOWN, Constraints(max_energy_mj=1.2))]["name"] == "g"
    assert pick(KNOWN, Constraints(max_latency_ms=4.2, max_size_bytes=9e6)) is None
    no_energy = [{**p, "energy_mj": None} for p in KNOWN]
    assert pick(no_energy, Constraints(max_energy_mj=100.0)) is None  # unmeasured cannot be shown to fit


def test_annotate_marks_each_board_apart() -> None:
    rows = [{**p, "board": "orin", "key": p["name"]} for p in KNOWN]
    rows += [{**p, "board": "nano", "key": p["name"], "latency_ms": p["latency_ms"] * 3} for p in KNOWN[:3]]
    rows.append({"name": "broken", "board": "nano", "key": "x", "error": "export failed", "accuracy": None})
    picks = annotate(rows, Constraints(max_latency_ms=13.0))
    assert rows[picks["orin"]]["name"] == "a" and rows[picks["nano"]]["name"] == "b"
    assert [r["name"] for r in rows if r["board"] == "nano" and r["pareto"]] == ["a", "b"]
    assert rows[-1]["pareto"] is False and rows[-1]["pick"] is False


def test_a_lost_board_is_retried_once_then_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeq.errors import BoardLostError
    from edgeq.fleet import remote
    from edgeq.fleet.inventory import Board
    from edgeq.fleet.sweep import ProfileOptions, profile_job

    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    record = {"key": "k" * 64, "model": str(model)}
    board = Board(name="orin", ssh="ssh://u@h:22", target="x86-cpu")
    calls: list[str] = []

    def flaky(bundle: Path, board: Board, options: object = None) -> dict:
        calls.append(str(bundle))
        if len(calls) in (1, 3, 4):
            raise BoardLostError("board orin: connection lost during the benchmark")
        return {"latency_ms": {"p50": 1.5, "p99": 2.0}, "iterations": 10, "energy": {"available": False, "reason": "none"}}

    monkeypatch.setattr(remote, "profile_on_board", flaky)
    cache = tmp_path / "cache"
    first = profile_job(record, board, ProfileOptions(), str(cache))
    assert len(calls) == 2 and first["latency_ms"] == 1.5 and first["attempts"] == 2 and first["cached"] is False
    assert (Path(calls[0]) / "manifest.json").is_file()  # a real bundle, exported for the board's target
    assert profile_job(record, board, ProfileOptions(), str(cache))["cached"] is True and len(calls) == 2
    lost = profile_job(record, board, ProfileOptions(iterations=7), str(cache))  # other options: not cached
    assert len(calls) == 4 and "after one retry" in lost["error"] and "latency_ms" not in lost
