"""Finding and reading target profiles: a shipped board by name, or the user's own TOML by path.

The shipped boards are the TOML files in the repository's top-level ``targets/`` folder (data,
not code: a new board is a new file), two levels above this package.
"""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import ConfigError
from edgeq.serialization import load_toml
from edgeq.targets.profile import TargetProfile
from edgeq.targets.schema import profile_from_dict

# edgeq/targets/loading.py -> parents[2] is the repository (or install) root holding targets/.
TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"


def load_target_file(path: str | Path) -> TargetProfile:
    path = Path(path)
    return profile_from_dict(load_toml(path, f"{path}: target profile not found"), str(path))


def list_targets(directory: str | Path | None = None) -> list[TargetProfile]:
    """Every profile shipped in ``targets/`` (or ``directory``), by name."""
    root = Path(directory) if directory is not None else TARGETS_DIR
    return sorted((load_target_file(p) for p in root.glob("*.toml")), key=lambda t: t.name)


def load_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """A shipped board by name (``jetson-orin-nano``) or the user's own TOML by path."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file() or "/" in text or "\\" in text:
        return load_target_file(path)
    candidate = TARGETS_DIR / f"{text}.toml"
    if candidate.is_file():
        profile = load_target_file(candidate)
        if profile.name != text:
            raise ConfigError(f"{candidate}: field 'name' is {profile.name!r}, expected {text!r} (the file name)")
        return profile
    names = ", ".join(t.stem for t in sorted(TARGETS_DIR.glob("*.toml")))
    raise ConfigError(f"--target: unknown target {text!r}; expected one of {names} or a path to a .toml profile")
