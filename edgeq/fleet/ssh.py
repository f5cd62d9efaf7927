"""The one place edgeq opens an SSH connection (paramiko), and how its failures read.

Host keys are checked against the board's known_hosts file and an unknown key is refused
(paramiko's ``RejectPolicy``), never accepted on first use: a board that answers with another key
is reported, not trusted. Only key files authenticate; no password is ever asked for or sent.
Every failure (refused login, wrong host key, no route, a connection that drops mid-command)
becomes one ``BoardError`` line naming the board.
"""

from __future__ import annotations

import select
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeq.errors import BoardError, BoardLostError, MissingDependencyError
from edgeq.fleet.inventory import Board, SshAddress

CONNECT_TIMEOUT_S = 15.0
KEEPALIVE_S = 5
_PID_MARK = "EDGEQ-REMOTE-PID "


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        raise MissingDependencyError("paramiko", "fleet", "reaching boards over SSH") from None
    return paramiko


@dataclass
class Completed:
    """What a remote command left: exit status, and its whole stdout and stderr."""

    status: int
    stdout: str
    stderr: str

    def last_error(self) -> str:
        """The last line on stderr without its ``error:`` prefix (the board's own one-line error)."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {self.status}"
        return last[len("error: "):] if last.startswith("error: ") else last


class BoardConnection:
    """An open SSH session to one board: ``run`` commands (streamed), move files over SFTP."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._clients: list[Any] = []
        self._sftp: Any = None
        self._client = self._connect()

    # --- connecting ---------------------------------------------------------------------------
    def _fail(self, address: SshAddress, exc: BaseException) -> BoardError:
        paramiko = _paramiko()
        where = f"board {self.board.name} ({address.host}:{address.port})"
        known = self.board.known_hosts_path
        if isinstance(exc, paramiko.BadHostKeyException):
            got = exc.key.fingerprint if hasattr(exc.key, "fingerprint") else exc.key.get_name()
            return BoardError(
                f"{where}: host key {got} does not match the one in {known}; refusing to connect "
                "(if the board was reinstalled, replace its line there)"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            key = self.board.key_file or "the default keys"
            return BoardError(f"{where}: login as {address.user} refused with {key}")
        if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
            return BoardError(
                f"{where}: host key is not in {known}; add it first (ssh-keyscan -p {address.port} {address.host})"
            )
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return BoardError(f"{where}: no answer within {CONNECT_TIMEOUT_S:.0f} s")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return BoardError(f"{where}: connection refused (is sshd running and the port right?)")
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return BoardError(f"{where}: cannot connect: {reason}")

    def _open(self, address: SshAddress, sock: Any = None) -> Any:
        paramiko = _paramiko()
        client = paramiko.SSHClient()
        known = self.board.known_hosts_path
        try:
            if known.is_file():
                client.load_host_keys(str(known))
        except (OSError, paramiko.SSHException) as exc:
            raise BoardError(f"board {self.board.name}: cannot read known_hosts {known}: {exc}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = str(self.board.key_path) if self.board.key_file else None
        try:
            client.connect(
                address.host, port=address.port, username=address.user, key_filename=key,
                look_for_keys=key is None, allow_agent=key is None, timeout=CONNECT_TIMEOUT_S,
                banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S, sock=sock,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise self._fail(address, exc) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)
        self._clients.append(client)
        return client

    def _connect(self) -> Any:
        target = self.board.address
        jump = self.board.jump_address
        try:
            if jump is None:
                return self._open(target)
            hop = self._open(jump)
            try:
                channel = hop.get_transport().open_channel("direct-tcpip", (target.host, target.port), ("127.0.0.1", 0))
            except (OSError, _paramiko().SSHException) as exc:
                raise BoardError(f"board {self.board.name}: jump host {jump.host} cannot reach {target.host}:{target.port}: {exc}") from None
            return self._open(target, sock=channel)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        for client in reversed(self._clients):
            client.close()
        self._clients.clear()

    def __enter__(self) -> BoardConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands -----------------------------------------------------------------------------
    def _lost(self, what: str) -> BoardLostError:
        return BoardLostError(f"board {self.board.label()}: connection lost during {what}; nothing was written here")

    def run(
        self,
        command: str,
        on_line: Callable[[str], None] | None = None,
        stdin: bytes | None = None,
        what: str = "a command",
    ) -> Completed:
        """Run ``command`` in the board's shell; each output line goes to ``on_line`` as it arrives.

        Ctrl-C here interrupts the remote process too (SIGINT to its pid, then SIGTERM), so a
        stopped profile does not keep the board busy. A connection that drops raises ``BoardLostError``.
        """
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise self._lost(what)
        try:
            channel = transport.open_session()
            channel.exec_command(f"echo '{_PID_MARK}'$$ >&2; exec {command}")
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
        except (OSError, EOFError, _paramiko().SSHException):
            raise self._lost(what) from None
        buffers = {"out": b"", "err": b""}
        texts: dict[str, list[str]] = {"out": [], "err": []}
        pid: list[str] = []

        def emit(kind: str, final: bool = False) -> None:
            *lines, rest = buffers[kind].split(b"\n")
            if final and rest:
                lines, rest = [*lines, rest], b""
            buffers[kind] = rest
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if kind == "err" and not pid and line.startswith(_PID_MARK):
                    pid.append(line[len(_PID_MARK):].strip())
                    continue
                texts[kind].append(line)
                if on_line is not None:
                    on_line(line)

        try:
            while True:
                select.select([channel], [], [], 0.5)
                got = False
                while channel.recv_ready():
                    buffers["out"] += channel.recv(65536)
                    got = True
                while channel.recv_stderr_ready():
                    buffers["err"] += channel.recv_stderr(65536)
                    got = True
                emit("out")
                emit("err")
                ended = channel.exit_status_ready() or channel.closed or not transport.is_active()
                if not got and ended and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
        except KeyboardInterrupt:
            self._interrupt(pid[0] if pid else None)
            channel.close()
            raise
        except (OSError, EOFError):
            raise self._lost(what) from None
        emit("out", final=True)
        emit("err", final=True)
        status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        channel.close()
        if status == -1:
            raise self._lost(what)
        return Completed(status, "\n".join(texts["out"]), "\n".join(texts["err"]))

    def _interrupt(self, pid: str | None) -> None:
        """Stop the remote process of an interrupted ``run``: SIGINT, a grace second, SIGTERM."""
        if pid is None or not pid.isdigit():
            return
        try:
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                return
            channel = transport.open_session()
            channel.exec_command(
                f"kill -INT {pid} 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 {pid} 2>/dev/null || exit 0; "
                f"sleep 0.2; done; kill -TERM {pid} 2>/dev/null; exit 0"
            )
            deadline = time.monotonic() + 5.0
            while not channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            channel.close()
        except (OSError, EOFError, _paramiko().SSHException):
            pass  # the board is gone; nothing left to stop

    def python(self, script: str, *args: str, python: str | None = None, what: str = "a command",
               on_line: Callable[[str], None] | None = None) -> Completed:
        """Run a Python snippet with the board's Python (``python`` overrides it)."""
        interpreter = python or self.board.python
        quoted = " ".join(shlex.quote(a) for a in args)
        return self.run(f"{shlex.quote(interpreter)} -c {shlex.quote(script)} {quoted}", on_line=on_line, what=what)

    # --- files --------------------------------------------------------------------------------
    def sftp(self) -> Any:
        if self._sftp is None:
            try:
                self._sftp = self._client.open_sftp()
            except (OSError, EOFError, _paramiko().SSHException) as exc:
                raise BoardError(f"board {self.board.label()}: SFTP is not available: {exc}") from None
        return self._sftp

    def put(self, local: str, remote: str) -> None:
        try:
            self.sftp().put(local, remote)
        except OSError as exc:
            raise BoardError(
                f"board {self.board.label()}: writing {remote} failed ({exc.strerror or exc}); "
                "the board's disk may be full or the folder not writable"
            ) from None
        except EOFError:
            raise self._lost(f"the upload of {remote}") from None

    def read_bytes(self, remote: str) -> bytes:
        try:
            with self.sftp().open(remote, "rb") as handle:
                return bytes(handle.read())
        except OSError as exc:
            raise BoardError(f"board {self.board.label()}: cannot read {remote}: {exc.strerror or exc}") from None
        except EOFError:
            raise self._lost(f"the download of {remote}") from None
