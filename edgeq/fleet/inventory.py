"""``boards.toml``: the boards a team measures on, each validated before anything connects.

A board is a name, an ``ssh://user@host:port`` address, the target profile it is (``jetson-orin-nano``),
the Python to run there, where the runtime venv and bundles live on it, and optionally a jump host,
a key file and a known_hosts file. Secrets never live here: a ``password`` (or passphrase) field is
refused, keys are named by path and read by paramiko only.

    schema_version = 1
    [[board]]
    name = "orin"
    ssh = "ssh://ubuntu@orin.lan:22"
    target = "jetson-orin-nano"
    python = "/usr/bin/python3"
    runtime_path = "edgeq-runtime"        # on the board; relative = under the login's home
    key_file = "~/.ssh/id_ed25519"         # on this machine
    known_hosts = "~/.ssh/known_hosts"     # on this machine (default)
    jump = "ssh://me@bastion.lan:22"       # optional
    sysfs_root = "/"                       # where the board's /sys and /etc are read (tests: fixtures)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from edgeq.errors import ConfigError
from edgeq.serialization import Serializable, load_toml

SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SECRET = re.compile(r"pass(word|phrase)?|secret|private_key", re.IGNORECASE)
# Fields an ssh:// URL given on the command line may carry as query parameters.
URL_OPTIONS = ("target", "python", "runtime_path", "key_file", "known_hosts", "jump", "sysfs_root")


@dataclass(frozen=True)
class SshAddress:
    user: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def parse_ssh_url(url: str, where: str) -> SshAddress:
    """``ssh://user@host[:port]`` → address; a password in the URL is refused, not ignored."""
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not an ssh://user@host:port address")
    if parts.password is not None:
        raise ConfigError(f"{where}: the address carries a password; boards are reached with a key file only")
    if not parts.username:
        raise ConfigError(f"{where}: {url!r} names no user; expected ssh://user@host:port")
    try:
        port = parts.port or 22
    except ValueError:
        raise ConfigError(f"{where}: {url!r} has an invalid port") from None
    if parts.path not in ("", "/"):
        raise ConfigError(f"{where}: {url!r} has a path; expected ssh://user@host:port")
    return SshAddress(unquote(parts.username), parts.hostname, port)


@dataclass(frozen=True)
class Board(Serializable):
    """One board, checked on construction (bad fields raise ``ConfigError`` naming ``source``)."""

    schema_type = "edgeq.Board"
    schema_version = 1

    name: str
    ssh: str
    target: str
    python: str = "python3"
    runtime_path: str = "edgeq-runtime"
    jump: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    sysfs_root: str = "/"
    source: str = "boards.toml"

    def __post_init__(self) -> None:
        where = f"{self.source}: board {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"{self.source}: board name {self.name!r} must be letters, digits, '.', '_' or '-'")
        for field in ("ssh", "target", "python", "runtime_path", "sysfs_root"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: {field} must be a non-empty string")
        for field in ("jump", "key_file", "known_hosts"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{where}: {field} must be a non-empty string when given")
        parse_ssh_url(self.ssh, f"{where}: ssh")
        if self.jump is not None:
            parse_ssh_url(self.jump, f"{where}: jump")
        if self.key_file is not None and not self.key_path.is_file():
            raise ConfigError(f"{where}: key_file {self.key_file} does not exist")
        if not self.sysfs_root.startswith("/"):
            raise ConfigError(f"{where}: sysfs_root must be an absolute path on the board, got {self.sysfs_root!r}")

    @property
    def address(self) -> SshAddress:
        return parse_ssh_url(self.ssh, self.name)

    @property
    def jump_address(self) -> SshAddress | None:
        return None if self.jump is None else parse_ssh_url(self.jump, self.name)

    @property
    def key_path(self) -> Path:
        return Path(str(self.key_file)).expanduser()

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts or "~/.ssh/known_hosts").expanduser()

    @property
    def remote_root(self) -> str:
        """The runtime path as the board's shell and SFTP read it (``~/x`` → ``x``, under home)."""
        path = self.runtime_path
        return path[2:] if path.startswith("~/") else path

    def label(self) -> str:
        return f"{self.name} ({self.address.host}:{self.address.port})"


@dataclass(frozen=True)
class Inventory(Serializable):
    schema_type = "edgeq.BoardInventory"
    schema_version = 1

    boards: tuple[Board, ...]
    source: str = "boards.toml"

    def __post_init__(self) -> None:
        names = [b.name for b in self.boards]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.source}: board {dupes[0]!r} is listed twice")

    def get(self, name: str) -> Board:
        for board in self.boards:
            if board.name == name:
                return board
        known = ", ".join(b.name for b in self.boards) or "none"
        raise ConfigError(f"--board: {self.source} has no board {name!r}; it has {known}")

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> Inventory:
        source = str(data.get("source", "boards.toml"))
        return cls(tuple(board_from_dict(b, source) for b in data["boards"]), source)


def _refuse_secrets(table: dict[str, Any], where: str) -> None:
    for key in table:
        if _SECRET.search(str(key)):
            raise ConfigError(f"{where}: field {key!r} is refused: never put a password or key in boards.toml; name a key_file")


def board_from_dict(table: Any, source: str) -> Board:
    if isinstance(table, dict) and table.get("_type") == Board.schema_type:
        table = table.get("_data", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: each [[board]] must be a table")
    where = f"{source}: board {table.get('name', '?')!r}"
    _refuse_secrets(table, where)
    known = {f.name for f in dataclasses.fields(Board)} - {"source"}
    unknown = sorted(set(table) - known - {"source"})
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; expected some of {', '.join(sorted(known))}")
    missing = [k for k in ("name", "ssh", "target") if k not in table]
    if missing:
        raise ConfigError(f"{where}: missing field {missing[0]!r}")
    return Board(**{k: v for k, v in table.items() if k != "source"}, source=source)


def load_boards(path: str | Path) -> Inventory:
    """Read and check ``boards.toml``."""
    path = Path(path)
    doc = load_toml(path, f"--boards {path}: file not found")
    _refuse_secrets(doc, str(path))
    version = doc.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{path}: schema_version {version!r}; this edgeq reads {SCHEMA_VERSION}")
    extra = sorted(set(doc) - {"schema_version", "board"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r}; boards go in [[board]] tables")
    tables = doc.get("board")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[board]] tables")
    return Inventory(tuple(board_from_dict(t, str(path)) for t in tables), str(path))


def board_from_url(url: str, default_target: str | None = None) -> Board:
    """``--board ssh://user@host:port?key_file=...&target=...`` as a board named after the host."""
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    _refuse_secrets(options, f"--board {parts._replace(query='').geturl()}")
    unknown = sorted(set(options) - set(URL_OPTIONS))
    if unknown:
        raise ConfigError(f"--board: unknown URL option {unknown[0]!r}; expected some of {', '.join(URL_OPTIONS)}")
    base = parts._replace(query="").geturl()
    address = parse_ssh_url(base, "--board")
    target = options.pop("target", None) or default_target
    if not target:
        raise ConfigError("--board: the bundle names no target; add ?target=NAME to the ssh:// address")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{address.host}-{address.port}")
    return Board(name=name, ssh=base, target=target, source="--board", **options)


def resolve_board(spec: str, boards: str | Path | None, default_target: str | None = None) -> Board:
    """``--board NAME`` (from ``--boards FILE``) or ``--board ssh://...``."""
    if spec.startswith("ssh://"):
        return board_from_url(spec, default_target)
    if boards is None:
        raise ConfigError(f"--board {spec}: give --boards boards.toml to look the name up, or an ssh:// address")
    return load_boards(boards).get(spec)
