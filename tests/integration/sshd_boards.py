"""Boards on loopback: a real OpenSSH sshd per board, keys and config in a temporary folder.

Each board is ``/usr/sbin/sshd -D -e -f <config>`` on 127.0.0.1 at a free port, with its own
throw-away ed25519 host key, the test user's key in ``authorized_keys`` (StrictModes and PAM off,
so it runs in a temp folder as whichever user runs the tests) and a sysfs fixture tree
(tests/runtime/sysfs_boards.py) for its power sensors and ``etc/nv_tegra_release``.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


def require_sshd() -> None:
    if not SSHD.is_file():
        pytest.skip("openssh-server is not installed (/usr/sbin/sshd missing; `make sshd` installs it)")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SshBoard:
    name: str
    port: int
    folder: Path
    host_key: Path
    sysfs_root: Path
    process: subprocess.Popen[bytes]

    @property
    def known_hosts_line(self) -> str:
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def session_pids(self) -> list[int]:
        """The per-connection sshd children of this board's listener (what a dropped link kills)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.is_file() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_board(folder: Path, name: str, user_key: Path, sysfs_root: Path) -> SshBoard:
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "host_ed25519")
    (folder / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        f"AllowUsers {getpass.getuser()}", "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
    ]))
    log = (folder / "sshd.log").open("wb")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    return SshBoard(name, port, folder, host_key, sysfs_root, process)


def board_toml(board: SshBoard, user_key: Path, known_hosts: Path, target: str, runtime: Path,
               python: str = sys.executable) -> str:
    return "\n".join([
        "[[board]]", f'name = "{board.name}"', f'ssh = "ssh://{getpass.getuser()}@127.0.0.1:{board.port}"',
        f'target = "{target}"', f'python = "{python}"', f'runtime_path = "{runtime}"', f'key_file = "{user_key}"',
        f'known_hosts = "{known_hosts}"', f'sysfs_root = "{board.sysfs_root}"', "",
    ])
