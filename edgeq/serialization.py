"""Schema-versioned JSON for configs and results.

Every config and result is a dataclass whose JSON form is ``{"_type", "_version", "_data"}``
(as torchao does): a reader refuses unknown types and versions newer than it understands,
instead of silently mis-reading a file written by a later edgeq.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edgeq.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T", bound="Serializable")

_REGISTRY: dict[str, type[Serializable]] = {}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, Serializable):
            return value.to_dict()
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class Serializable:
    """Mixin for dataclasses written to JSON with a type tag and schema version.

    Subclasses set ``schema_type`` and ``schema_version``; nested ``Serializable`` fields are
    tagged too. ``from_dict`` is shallow by default: a subclass with nested dataclasses
    overrides ``_from_data`` to rebuild them.
    """

    schema_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.schema_type:
            _REGISTRY[cls.schema_type] = cls

    def to_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        data = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"_type": self.schema_type, "_version": self.schema_version, "_data": data}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_encode)

    @classmethod
    def _from_data(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_dict(cls: type[T], obj: Any, source: str = "input") -> T:
        if not isinstance(obj, dict) or "_type" not in obj or "_data" not in obj:
            raise ConfigError(f"{source}: not an edgeq {cls.schema_type} document (missing _type/_data)")
        if obj["_type"] != cls.schema_type:
            raise ConfigError(f"{source}: expected a {cls.schema_type} document, found {obj['_type']!r}")
        version = obj.get("_version", 0)
        if not isinstance(version, int) or version > cls.schema_version:
            raise ConfigError(
                f"{source}: {cls.schema_type} schema version {version} is newer than this edgeq "
                f"understands ({cls.schema_version}); upgrade edgeq"
            )
        try:
            return cls._from_data(obj["_data"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"{source}: invalid {cls.schema_type} document: {exc}") from None

    @classmethod
    def from_json(cls: type[T], text: str, source: str = "input") -> T:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(obj, source)

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: file not found")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))

    def save(self, path: str | Path) -> Path:
        from edgeq.fileio import atomic_write_text

        return atomic_write_text(path, self.to_json() + "\n")


def load_toml(path: str | Path, missing: str | None = None) -> dict[str, Any]:
    """A TOML file as a dict (the one TOML reader: target profiles, data recipes, boards, sweep grids).

    ``missing`` is the message for a file that does not exist (None: the read error says it);
    unreadable or invalid TOML is one ``ConfigError`` naming the file.
    """
    path = Path(path)
    if missing is not None and not path.is_file():
        raise ConfigError(missing)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
