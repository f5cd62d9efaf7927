"""``path/to/file.py:factory`` model specs, recognised and imported without torch.

Every command that takes ``MODEL.onnx`` also takes such a spec, so the recogniser sits in front
of every model load and must cost nothing: it is a regular expression plus one ``stat``. The
import itself runs the user's file, which is why each way it can go wrong (no file, no function,
the file raising while it loads) is reported as one line naming the file and what was expected.

The file is imported the way ``python file.py`` would see it: its own folder is first on
``sys.path`` while it loads and while its factory runs, so a factory can import the modules next
to it. A file may also define ``EDGEQ_EXPORT``, a dict of export options (see
``EXPORT_OPTION_KEYS``), which is how a command-line user names the graph's inputs and outputs or
loosens the export check without a new flag on every command; ``{"decoder": True}`` says the
factory returns an autoregressive decoder to export with a KV cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeq.errors import ConfigError

# The last ':' separates the function, so Windows drive letters ("C:\\m.py:make") still parse.
_SPEC = re.compile(r"^(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")

#: Keys a factory file's ``EDGEQ_EXPORT`` dict may set, with the types they must have.
EXPORT_OPTION_KEYS: dict[str, tuple[type, ...]] = {
    "input_names": (list, tuple),
    "output_names": (list, tuple),
    "opset": (int,),
    "atol": (int, float),
    "rtol": (int, float),
    # True: the factory returns a decoder module alone, exported with a KV cache
    # (edgeq.frontends.decoder_export).
    "decoder": (bool,),
}


@dataclass(frozen=True)
class FactorySpec:
    """A Python file and the name of the function in it that builds the model."""

    file: Path
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.function}"


def is_factory_spec(text: str | Path) -> bool:
    """True for ``something.py:name`` unless a file by that exact name exists (then it is a file)."""
    text = str(text)
    if not _SPEC.match(text):
        return False
    return not Path(text).exists()


def parse_factory_spec(text: str | Path) -> FactorySpec:
    """Split a spec into file and function; the file must exist."""
    match = _SPEC.match(str(text))
    if match is None:
        raise ConfigError(f"{text}: not a model factory spec; expected path/to/file.py:function_name")
    file = Path(match["file"]).expanduser()
    if not file.is_file():
        raise ConfigError(f"{text}: {file} not found (a model spec is path/to/file.py:function_name)")
    return FactorySpec(file=file.resolve(), function=match["function"])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _script_folder_on_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def import_factory_file(spec: FactorySpec) -> ModuleType:
    """Import the spec's file by path under a private module name (no package needed)."""
    # One name per file contents: re-importing an edited file gives a fresh module.
    name = f"_edgeq_factory_{file_sha256(spec.file)[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, spec.file)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"{spec}: cannot import {spec.file} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
    try:
        with _script_folder_on_path(spec.file.parent):
            loader_spec.loader.exec_module(module)
    except SystemExit as exc:  # sys.exit() in the user's file must not end edgeq "successfully"
        del sys.modules[name]
        raise ConfigError(f"{spec.file}: importing it called sys.exit({exc.code!r}); a factory file must not exit") from None
    except Exception as exc:  # the user's file: any error it raises is theirs to see, in one line
        del sys.modules[name]
        raise ConfigError(f"{spec.file}: importing it raised {type(exc).__name__}: {exc}") from exc
    return module


def load_factory(spec: FactorySpec) -> Callable[[], Any]:
    module = import_factory_file(spec)
    factory = getattr(module, spec.function, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        hint = f"; functions defined there: {', '.join(public)}" if public else ""
        raise ConfigError(f"{spec}: {spec.file.name} has no function {spec.function!r}{hint}")
    if not callable(factory):
        raise ConfigError(f"{spec}: {spec.function!r} in {spec.file.name} is not a function")
    return factory  # type: ignore[no-any-return]


def call_factory(spec: FactorySpec) -> Any:
    """Run the factory with its folder importable, reporting an exception in it as one line."""
    factory = load_factory(spec)
    try:
        with _script_folder_on_path(spec.file.parent):
            return factory()
    except SystemExit as exc:
        raise ConfigError(f"{spec}: the factory called sys.exit({exc.code!r}); it must return the model") from None
    except TypeError as exc:
        if "required positional argument" in str(exc) or "takes 0 positional" in str(exc):
            raise ConfigError(f"{spec}: the factory must take no arguments ({exc})") from exc
        raise ConfigError(f"{spec}: the factory raised TypeError: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from exc


def export_options(spec: FactorySpec) -> dict[str, Any]:
    """The file's ``EDGEQ_EXPORT`` options, validated; ``{}`` when it defines none."""
    module = import_factory_file(spec)
    options = getattr(module, "EDGEQ_EXPORT", None)
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"{spec.file}: EDGEQ_EXPORT must be a dict, got {type(options).__name__}")
    for key, value in options.items():
        if key not in EXPORT_OPTION_KEYS:
            raise ConfigError(
                f"{spec.file}: EDGEQ_EXPORT has unknown option {key!r}; "
                f"expected some of {', '.join(EXPORT_OPTION_KEYS)}"
            )
        expected = EXPORT_OPTION_KEYS[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            names = " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{spec.file}: EDGEQ_EXPORT[{key!r}] must be {names}, got {value!r}")
        if key.endswith("_names") and not all(isinstance(v, str) for v in options[key]):
            raise ConfigError(f"{spec.file}: EDGEQ_EXPORT[{key!r}] must be a list of strings, got {value!r}")
    return dict(options)
