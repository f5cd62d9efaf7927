"""Boards over SSH, for real: two OpenSSH servers on 127.0.0.1 stand in for an Orin Nano and a Nano.

Each has its own host key, sysfs fixture tree (power sensors, /etc/nv_tegra_release) and runtime
folder; the tests connect with paramiko through ``edgeq boards check`` and ``edgeq profile --board``.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgeq.cli import main
from tests.integration.sshd_boards import board_toml, free_port, keygen, require_sshd, start_board
from tests.integration.test_report_profile import _mlp
from tests.runtime import sysfs_boards

pytest.importorskip("paramiko", reason="the fleet extra is not installed (pip install 'edgeq[fleet]')")
ROOT = Path(__file__).resolve().parents[2]
FAST = ["--iterations", "20", "--warmup", "2", "--idle", "0.3"]


class Lab:
    """Two boards, their inventory, a bundle and the user key, made once for the module."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = keygen(tmp / "id_ed25519")
        orin = tmp / "sys-orin"
        sysfs_boards.orin_nano(orin)
        sysfs_boards.write(orin / "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic")
        nano = tmp / "sys-nano"
        sysfs_boards.nano_iio(nano)
        sysfs_boards.write(nano / "etc/nv_tegra_release", "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref")
        self.orin = start_board(tmp / "orin", "orin", self.key, orin)
        self.nano = start_board(tmp / "nano", "nano", self.key, nano)
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(self.orin.known_hosts_line + self.nano.known_hosts_line)
        self.boards = self.inventory("boards.toml", target="x86-cpu")
        self.bundle = tmp / "bundle"
        assert main(["export", str(_mlp(tmp / "mlp.onnx")), "--target", "x86-cpu", "-o", str(self.bundle)]) == 0

    def inventory(self, name: str, target: str, **orin: Any) -> Path:
        path = self.tmp / name
        first = board_toml(self.orin, orin.pop("key", self.key), orin.pop("known_hosts", self.known_hosts), target,
                           orin.pop("runtime", self.tmp / "rt-orin"), **orin)
        path.write_text(first + board_toml(self.nano, self.key, self.known_hosts, target, self.tmp / "rt-nano"))
        return path

    def stop(self) -> None:
        for board in (self.orin, self.nano):
            board.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_sshd()
    lab = Lab(tmp_path_factory.mktemp("fleet"))
    yield lab
    lab.stop()


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_boards_check_reads_versions_sensors_and_what_each_can_run(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    boards = lab.inventory("boards-jetson.toml", target="jetson-orin-nano")
    assert main(["boards", "check", str(boards), "--json"]) == 0
    statuses = {s["_data"]["name"]: s["_data"] for s in json.loads(capsys.readouterr().out)}
    orin, nano = statuses["orin"], statuses["nano"]
    assert orin["l4t"] == "36.4.3" and orin["jetpack"] == "6.2"
    assert nano["l4t"] == "32.7.1" and nano["jetpack"] == "4.6"
    assert orin["power"] == "ina3221-hwmon: VDD_IN"  # the runtime's discovery, on each board's own tree
    assert nano["power"].startswith("ina3221-iio") and "POM_5V_IN" in nano["power"]
    assert orin["python"] == ".".join(map(str, sys.version_info[:3]))
    assert orin["packages"]["onnxruntime"] and orin["packages"]["numpy"] and orin["packages"]["tensorrt"] is None
    assert orin["mem_available_bytes"] > 0 and orin["disk_free_bytes"] > 0
    assert orin["can_run"] == [f"onnxruntime {orin['packages']['onnxruntime']}"]
    assert any("no TensorRT" in p and "10.3.0" in p for p in orin["problems"])
    assert any("JetPack 4.6 is not one jetson-orin-nano lists" in p for p in nano["problems"])
    assert main(["boards", "check", str(boards)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["board", "address", "target"]
    assert "6.2 (L4T 36.4.3)" in table and "orin: can run onnxruntime" in table


def _shape(value: Any) -> Any:
    """The structure of a JSON document: dict keys (recursively), list → shape of its first item."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


def test_remote_profile_has_the_structure_of_a_local_one(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    local, remote, html = lab.tmp / "local.json", lab.tmp / "remote.json", lab.tmp / "remote.html"
    assert main(["profile", str(lab.bundle), "--json", str(local), *FAST]) == 0
    argv = ["profile", str(lab.bundle), "--board", "orin", "--boards", str(lab.boards), "-o", str(html), "--json", str(remote), *FAST]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "orin| latency ms" in err  # the remote run's own output, streamed back line by line
    here = json.loads(local.read_text())["_data"]["sections"][0]
    there = json.loads(remote.read_text())["_data"]["sections"][0]
    assert there["benchmark"]["device"].pop("board") == "orin"
    assert there["benchmark"]["device"].pop("ssh").endswith(f":{lab.orin.port}")
    here_shape, there_shape = _shape(here), _shape(there)
    # Energy: the board has an INA3221 fixture, this machine may have none: compare the rest whole.
    here_shape["benchmark"].pop("energy"), there_shape["benchmark"].pop("energy")
    for key in ("energy_per_inference_mj", "energy_above_idle_per_inference_mj", "average_power_w", "energy_reason"):
        here_shape["summary"].pop(key), there_shape["summary"].pop(key)
    assert set(here["benchmark"]["device"]) == set(there["benchmark"]["device"])
    assert here_shape == there_shape
    assert there["benchmark"]["iterations"] == 20 and len(there["benchmark"]["trace_ms"]) == 22
    assert there["benchmark"]["energy"]["available"] is True and there["summary"]["average_power_w"] > 0
    assert there["target"] == "x86-cpu on board orin"
    page = html.read_text()
    assert "on board orin" in page and "ina3221" in page
    # Again: nothing changed, nothing is sent; one file changed, only it is sent.
    assert main(argv) == 0
    assert "0 file(s) sent, 3 unchanged" in capsys.readouterr().err
    changed = lab.tmp / "changed" / "bundle"  # same name, so the same folder on the board
    shutil.copytree(lab.bundle, changed)
    (changed / "NOTES.txt").write_text("measured on the orin\n")
    argv[1] = str(changed)
    assert main(argv) == 0
    assert "1 file(s) sent, 3 unchanged" in capsys.readouterr().err
    assert (lab.tmp / "rt-orin/bundles/bundle/NOTES.txt").read_text() == "measured on the orin\n"
    assert not list((lab.tmp / "rt-orin/bundles").glob("*.tmp-*"))


def test_board_given_as_an_ssh_url(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    url = (f"ssh://{getpass.getuser()}@127.0.0.1:{lab.nano.port}"
           f"?key_file={lab.key}&known_hosts={lab.known_hosts}&python={sys.executable}"
           f"&runtime_path={lab.tmp / 'rt-url'}&sysfs_root={lab.nano.sysfs_root}")
    out = lab.tmp / "url.json"
    assert main(["profile", str(lab.bundle), "--board", url, "--json", str(out), *FAST]) == 0
    section = json.loads(out.read_text())["_data"]["sections"][0]
    assert section["benchmark"]["device"]["board"] == f"127.0.0.1-{lab.nano.port}"
    assert "POM_5V_IN" in section["benchmark"]["energy"]["source"]


def test_a_board_behind_a_jump_host(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """The nano reached through the orin (an SSH direct-tcpip channel), both host keys checked."""
    jump = f"ssh://{getpass.getuser()}@127.0.0.1:{lab.orin.port}"
    boards = lab.tmp / "boards-jump.toml"
    boards.write_text(board_toml(lab.nano, lab.key, lab.known_hosts, "x86-cpu", lab.tmp / "rt-nano") + f'jump = "{jump}"\n')
    assert main(["boards", "check", str(boards), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)[0]["_data"]
    assert status["error"] is None and status["l4t"] == "32.7.1"  # the nano's own fixture tree answered
    closed = free_port()  # the same board behind a jump host that is down: the jump is really taken
    boards.write_text(board_toml(lab.nano, lab.key, lab.known_hosts, "x86-cpu", lab.tmp / "rt-nano")
                      + f'jump = "ssh://{getpass.getuser()}@127.0.0.1:{closed}"\n')
    assert main(["boards", "check", str(boards)]) == 2
    assert f"nano: unreachable: board nano (127.0.0.1:{closed}): connection refused" in capsys.readouterr().out


def test_wrong_host_key_is_one_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = lab.tmp / "known_hosts_wrong"  # the nano's key recorded for the orin's address
    wrong.write_text(lab.nano.known_hosts_line.replace(f":{lab.nano.port}", f":{lab.orin.port}"))
    boards = lab.inventory("boards-wrong-key.toml", target="x86-cpu", known_hosts=wrong)
    line = _one_line_exit_2(capsys, ["profile", str(lab.bundle), "--board", "orin", "--boards", str(boards), *FAST])
    assert "host key" in line and "does not match" in line and str(wrong) in line
    unknown = lab.tmp / "known_hosts_empty"
    unknown.write_text("")
    boards = lab.inventory("boards-unknown-key.toml", target="x86-cpu", known_hosts=unknown)
    line = _one_line_exit_2(capsys, ["profile", str(lab.bundle), "--board", "orin", "--boards", str(boards), *FAST])
    assert "is not in" in line and "ssh-keyscan" in line


def test_refused_login_is_one_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = keygen(lab.tmp / "stranger_ed25519")
    boards = lab.inventory("boards-stranger.toml", target="x86-cpu", key=stranger)
    line = _one_line_exit_2(capsys, ["profile", str(lab.bundle), "--board", "orin", "--boards", str(boards), *FAST])
    assert "login as" in line and "refused" in line and str(stranger) in line


def test_board_without_python_is_one_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    boards = lab.inventory("boards-nopython.toml", target="x86-cpu", python="/opt/no-such/python3")
    line = _one_line_exit_2(capsys, ["profile", str(lab.bundle), "--board", "orin", "--boards", str(boards), *FAST])
    assert "no Python at '/opt/no-such/python3'" in line


def test_full_disk_on_the_board_is_one_line(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    small = lab.tmp / "tiny-disk"
    small.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a 64 KiB tmpfs, which only root can mount")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here to fill: {mounted.stderr.strip()}")
    try:
        boards = lab.inventory("boards-full.toml", target="x86-cpu", runtime=small / "rt")
        line = _one_line_exit_2(capsys, ["profile", str(lab.bundle), "--board", "orin", "--boards", str(boards), *FAST])
        assert "MB free under" in line and "needed" in line
        assert not list(small.rglob("*.tmp-*"))  # no partial copy left on the board
    finally:
        subprocess.run(["umount", str(small)], check=False)


def _cli(argv: list[str], tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'runtime'}"}
    return subprocess.Popen([sys.executable, "-m", "edgeq", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp)


def _remote_bench_pids(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if len(argv) > 2 and argv[1].startswith(marker) and argv[1].endswith("/bin/edgeq-run") and argv[2] == "bench":
                found.append(int(proc.name))
    return found


def _wait_for(predicate: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def test_ctrl_c_stops_the_remote_run(lab: Lab) -> None:
    runtime = lab.tmp / "rt-orin"  # installed by the profile test; this run reuses it
    out = lab.tmp / "interrupted.json"
    proc = _cli(["profile", str(lab.bundle), "--board", "orin", "--boards", str(lab.boards), "--json", str(out),
                 "--duration", "60", "--idle", "0"], lab.tmp)
    pids = _wait_for(lambda: _remote_bench_pids(str(runtime)), 60)
    assert pids, proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted; no output was written"
    assert _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), 10), "the remote edgeq-run kept running"
    assert not out.exists()


def test_a_board_that_drops_mid_run_is_one_line_and_writes_nothing(lab: Lab) -> None:
    runtime = lab.tmp / "rt-orin"
    out, html = lab.tmp / "dropped.json", lab.tmp / "dropped.html"
    proc = _cli(["profile", str(lab.bundle), "--board", "orin", "--boards", str(lab.boards), "--json", str(out),
                 "-o", str(html), "--duration", "60", "--idle", "0"], lab.tmp)
    assert _wait_for(lambda: _remote_bench_pids(str(runtime)), 60), proc.communicate(timeout=5)
    sessions: list[int] = lab.orin.session_pids()
    assert sessions
    for pid in sessions:  # the per-connection sshd processes: the link to the board goes down
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, err
    assert len(errors) == 1 and "connection lost during the benchmark" in errors[0], err
    assert not out.exists() and not html.exists()


def test_no_key_or_secret_reaches_outputs_logs_or_reports(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    html, doc = lab.tmp / "secret.html", lab.tmp / "secret.json"
    assert main(["profile", str(lab.bundle), "--board", "orin", "--boards", str(lab.boards), "-o", str(html),
                 "--json", str(doc), *FAST]) == 0
    assert main(["boards", "check", str(lab.boards), "--json"]) == 0
    captured = capsys.readouterr()
    private = lab.key.read_text()
    body = "".join(line for line in private.splitlines()[1:-1])
    texts = {"stdout": captured.out, "stderr": captured.err, "html": html.read_text(), "json": doc.read_text()}
    for runtime in (lab.tmp / "rt-orin", lab.tmp / "rt-nano"):
        for path in runtime.rglob("*.json"):
            texts[str(path)] = path.read_text()
    for where, text in texts.items():
        assert "PRIVATE KEY" not in text, where
        for chunk in (body[i:i + 24] for i in range(0, len(body) - 24, 24)):
            assert chunk not in text, where


def test_a_password_in_boards_toml_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text('[[board]]\nname = "a"\nssh = "ssh://u@h:22"\ntarget = "x86-cpu"\npassword = "hunter2"\n')
    line = _one_line_exit_2(capsys, ["boards", "check", str(boards)])
    assert "'password' is refused" in line and "hunter2" not in line
    boards.write_text('[[board]]\nname = "a"\nssh = "ssh://u:hunter2@h:22"\ntarget = "x86-cpu"\n')
    line = _one_line_exit_2(capsys, ["boards", "check", str(boards)])
    assert "carries a password" in line and "hunter2" not in line
