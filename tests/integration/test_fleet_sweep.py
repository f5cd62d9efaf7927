"""``edgeq sweep`` on the real MiniLM with a local Ray (2 CPUs): killed mid-way, it resumes without
redoing finished jobs; with a board (sshd on loopback) every result is profiled there and picked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.sweep import grid_toml
from tests.integration.sshd_boards import board_toml, keygen, require_sshd, start_board
from tests.runtime import sysfs_boards

pytest.importorskip("ray", reason="the fleet extra is not installed (pip install 'edgeq[fleet]')")
ROOT = Path(__file__).resolve().parents[2]
GRID = grid_toml(samples=8, iterations=20, warmup=2, idle_s=0.2)


def _sweep(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'runtime'}"}
    return subprocess.Popen([sys.executable, "-m", "edgeq", "sweep", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=cwd, start_new_session=True)


def _finished(out: Path) -> dict[str, float]:
    """Finished job entries → mtime of their model (a redone job would write it again)."""
    return {p.parent.name: (p.parent / "model.onnx").stat().st_mtime_ns for p in (out / "cache" / "jobs").glob("*/job.json")}


def _settled(out: Path, quiet_s: float = 3.0, limit_s: float = 60.0) -> dict[str, float]:
    """The finished entries once none has appeared for ``quiet_s``: a Ray worker of the killed run
    may still be finishing its job when the driver is gone (it lives in Ray's own session)."""
    seen, since, deadline = _finished(out), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.25)
        now = _finished(out)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


@pytest.mark.slow
def test_sweep_killed_mid_way_resumes_without_redoing_jobs(minilm_model: Path, text_sets: tuple[Path, Path], tmp_path: Path) -> None:
    grid = tmp_path / "sweep.toml"
    grid.write_text(GRID)
    out = tmp_path / "sweep"
    argv = [str(minilm_model), "--grid", str(grid), "--data", str(text_sets[0]), "-o", str(out), "--num-cpus", "2"]
    first = _sweep(argv, tmp_path)
    deadline = time.monotonic() + 300
    while len(_finished(out)) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver, and Ray's processes in its session
    first.wait()
    done_before = _settled(out)
    assert 3 <= len(done_before) < 8, first.stdout.read() if first.stdout else ""
    assert not (out / "results.jsonl").exists()  # written only at the end

    second = _sweep(argv, tmp_path)
    log, _ = second.communicate(timeout=600)
    assert second.returncode == 0, log
    assert log.count("(cached)") == len(done_before), log
    after = _finished(out)
    assert len(after) == 8
    assert {k: after[k] for k in done_before} == done_before  # not one finished job was redone
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert all(r["accuracy_metric"] == "embedding_cosine_mean" and 0.9 < r["accuracy"] <= 1.0 for r in rows)
    int8 = [r for r in rows if r["config"]["_data"]["weights"] == "int8"]
    int4 = [r for r in rows if r["config"]["_data"]["weights"] == "int4"]
    assert min(r["accuracy"] for r in int8) > max(r["accuracy"] for r in int4)
    assert max(r["file_bytes"] for r in int4) < min(r["file_bytes"] for r in int8)
    assert sum(r["pick"] for r in rows) == 1 and next(r for r in rows if r["pick"])["config"]["_data"]["weights"] == "int8"

    third = _sweep([*argv, "--max-size", "13MB"], tmp_path)
    log, _ = third.communicate(timeout=120)
    assert third.returncode == 0 and "(cache," in log and log.count("(cached)") == 8, log
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    picked = next(r for r in rows if r["pick"])
    assert picked["file_bytes"] <= 13e6
    assert picked["accuracy"] == max(r["accuracy"] for r in rows if r["file_bytes"] <= 13e6)


@pytest.mark.slow
def test_sweep_profiles_every_result_on_a_board(minilm_model: Path, text_sets: tuple[Path, Path], tmp_path: Path) -> None:
    require_sshd()
    key = keygen(tmp_path / "id_ed25519")
    root = tmp_path / "sys"
    sysfs_boards.orin_nano(root)
    board = start_board(tmp_path / "sshd", "orin", key, root)
    try:
        known = tmp_path / "known_hosts"
        known.write_text(board.known_hosts_line)
        boards = tmp_path / "boards.toml"
        boards.write_text(board_toml(board, key, known, "x86-cpu", tmp_path / "rt"))
        grid = tmp_path / "sweep.toml"
        grid.write_text(grid_toml(samples=8, iterations=20, warmup=2, idle_s=0.2, blocks=(128,)))
        out = tmp_path / "sweep"
        proc = _sweep([str(minilm_model), "--grid", str(grid), "--data", str(text_sets[0]), "-o", str(out),
                       "--num-cpus", "2", "--boards", str(boards), "--max-latency", "1s"], tmp_path)
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log
    finally:
        board.stop()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["board"] for r in rows] == ["orin", "orin"] and all("error" not in r for r in rows), rows
    assert all(r["latency_ms"] > 0 and r["energy_mj"] > 0 for r in rows)  # the board's INA3221 fixture
    spans = sorted((p["started"], p["finished"]) for p in map(json.loads, map(Path.read_text, (out / "cache" / "profiles").glob("*.json"))))
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # never two runs on the board at once
    assert sum(r["pick"] for r in rows) == 1 and "pick for board orin" in log
    page = (out / "report.html").read_text()
    assert "Board orin (x86-cpu)" in page and "accuracy × size × latency × energy" in page
    assert key.read_text().splitlines()[1] not in page + log + (out / "results.jsonl").read_text()
