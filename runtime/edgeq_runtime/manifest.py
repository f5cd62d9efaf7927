"""The bundle manifest: the only contract between the edgeq toolkit and the on-device runtime.

A bundle is a folder ``manifest.json`` + ``model.onnx`` (+ an optional TensorRT ``.engine``, + any
external-data files). The toolkit writes it on the workstation; the runtime reads it on a board that
has neither edgeq nor torch, possibly months later and with a different version of either. So the
manifest is a versioned JSON document validated field by field, and every file the runtime loads is
listed with its sha256: a bundle copied half-way or edited by hand is refused before anything runs.

JSON form::

    {"schema": "edgeq.bundle", "schema_version": 2,
     "model": "model.onnx",
     "files": [{"path": "model.onnx", "sha256": "<64 hex>", "bytes": 1234}, ...],
     "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224]}],
     "outputs": [...],
     "precision": {...free-form plan summary from export...},
     "target": {"name": "jetson-orin-nano", "backend": "tensorrt", "tensorrt_version": "10.3",
                "strongly_typed": true, "fp16": true, "int8": true, "dla_core": null,
                "workspace_mib": 1024, "opset": 17, ...},
     "tool_versions": {"edgeq": "0.1.0", "onnx": "1.17.0", ...},
     "engine": null,
     "created": "2025-01-01T00:00:00+00:00"}

Documented ``target`` keys (all optional, others are kept as written):
``name`` (str), ``backend`` ("tensorrt" | "ort": what the bundle was exported for), ``tensorrt_version``
(str), ``strongly_typed`` (bool: build the engine strongly typed, the Q/DQ path), ``fp16`` / ``int8``
(bool: builder flags for TensorRT < 11), ``int8_mode`` ("explicit" | "implicit" | null: whether an
``int8`` build takes its scales from Q/DQ nodes or the calibration cache), ``quantization``
("strongly_typed" | "explicit" | "implicit" | "none": which quantization the bundle is, in one word),
``dla_core`` (int or null), ``workspace_mib`` (number), ``opset`` (int), ``ort_session_config``
({str: str}: onnxruntime session config entries the graph runs best with, set on every onnxruntime
session, e.g. ``session.disable_quant_qdq`` for a weight-only DequantizeLinear graph).

Compatibility: a reader refuses another ``schema`` and any ``schema_version`` newer than its own;
unknown top-level keys are refused too, because a new field means a new version.

Version 2 adds ``decoder`` (``edgeq_runtime.decoder_spec``: KV layout, tokenizer file, generation
settings) for KV-cache decoders; it is null or absent otherwise, and version 1 manifests (which
cannot have it) are still read.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Optional, Union

from edgeq_runtime._fileio import atomic_write_text, sha256_file
from edgeq_runtime.decoder_spec import DecoderSpec
from edgeq_runtime.errors import BundleError

__all__ = [
    "DTYPES",
    "MANIFEST_NAME",
    "BundleError",
    "FileEntry",
    "Manifest",
    "TensorSpec",
    "verify_bundle",
]

MANIFEST_NAME = "manifest.json"

# numpy dtype names a bundle input/output may have (ONNX types numpy cannot hold are not accepted).
DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)

TARGET_BACKENDS = ("tensorrt", "ort")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")

Dim = Union[int, str]


def _fail(source: str, what: str) -> BundleError:
    return BundleError(source + ": " + what)


def _check_relative_path(value: Any, source: str, where: str) -> str:
    """Bundle paths are relative POSIX paths inside the bundle: a manifest must not point outside it."""
    if not isinstance(value, str) or not value:
        raise _fail(source, where + " must be a non-empty relative path, got " + repr(value))
    posix = PurePosixPath(value)
    if value.startswith("/") or _DRIVE.match(value) or ".." in posix.parts or "\\" in value:
        raise _fail(source, where + " " + repr(value) + " must be a relative path inside the bundle (no '..', no drive)")
    return value


@dataclass
class FileEntry:
    """One file of the bundle with the checksum the runtime verifies before loading it."""

    path: str
    sha256: str
    bytes: int

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str) -> FileEntry:
        if not isinstance(data, dict):
            raise _fail(source, where + " must be an object with path, sha256 and bytes")
        _no_unknown_keys(data, ("path", "sha256", "bytes"), source, where)
        path = _check_relative_path(data.get("path"), source, where + ".path")
        sha = data.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise _fail(source, where + ".sha256 for " + repr(path) + " must be 64 lowercase hex digits, got " + repr(sha))
        size = data.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _fail(source, where + ".bytes for " + repr(path) + " must be a non-negative integer, got " + repr(size))
        return cls(path=path, sha256=sha, bytes=size)


@dataclass
class TensorSpec:
    """A model input or output: numpy dtype name and shape (ints, or strings for dynamic dims)."""

    name: str
    dtype: str
    shape: List[Dim]

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @property
    def rank(self) -> int:
        return len(self.shape)

    @classmethod
    def from_dict(cls, data: Any, source: str, where: str) -> TensorSpec:
        if not isinstance(data, dict):
            raise _fail(source, where + " must be an object with name, dtype and shape")
        _no_unknown_keys(data, ("name", "dtype", "shape"), source, where)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(source, where + ".name must be a non-empty string, got " + repr(name))
        dtype = data.get("dtype")
        if dtype not in DTYPES:
            raise _fail(source, where + " (" + name + ") dtype " + repr(dtype) + " is not one of " + ", ".join(DTYPES))
        shape = data.get("shape")
        if not isinstance(shape, list):
            raise _fail(source, where + " (" + name + ") shape must be a list, got " + repr(shape))
        for dim in shape:
            if isinstance(dim, bool) or not (
                (isinstance(dim, int) and dim >= 0) or (isinstance(dim, str) and dim)
            ):
                raise _fail(
                    source,
                    where + " (" + name + ") shape " + repr(shape)
                    + " must hold non-negative ints or names of dynamic dims",
                )
        return cls(name=name, dtype=str(dtype), shape=list(shape))


def _no_unknown_keys(data: Dict[str, Any], known: Iterable[str], source: str, where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _fail(source, where + " has unknown keys " + ", ".join(unknown) + " (written by a newer edgeq?)")


def _dict_field(data: Dict[str, Any], key: str, source: str) -> Dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _fail(source, "'" + key + "' must be an object, got " + type(value).__name__)
    return value


def utc_now_iso() -> str:
    """The timestamp format of ``Manifest.created`` (UTC, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Manifest:
    """What the runtime needs to know about a bundle, and nothing the toolkit cannot vouch for."""

    SCHEMA = "edgeq.bundle"
    SCHEMA_VERSION = 2

    model: str
    files: List[FileEntry]
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    precision: Dict[str, Any] = field(default_factory=dict)
    target: Dict[str, Any] = field(default_factory=dict)
    tool_versions: Dict[str, Any] = field(default_factory=dict)
    engine: Optional[str] = None
    created: str = ""
    decoder: Optional[DecoderSpec] = None
    schema_version: int = SCHEMA_VERSION  # the version it was read as (written: always the newest)

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": self.SCHEMA,
            "schema_version": self.SCHEMA_VERSION,
            "model": self.model,
            "files": [entry.to_dict() for entry in self.files],
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "precision": self.precision,
            "target": self.target,
            "tool_versions": self.tool_versions,
            "engine": self.engine,
            "created": self.created,
            "decoder": self.decoder.to_dict() if self.decoder is not None else None,
        }

    def to_json(self) -> str:
        # Validate before writing: the toolkit must never produce a manifest the runtime refuses.
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        Manifest.from_json(text, source="manifest being written")
        return text + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict):
            raise _fail(source, "a bundle manifest must be a JSON object, got " + type(data).__name__)
        schema = data.get("schema")
        if schema != cls.SCHEMA:
            raise _fail(source, "not an edgeq bundle manifest (schema " + repr(schema) + ", expected " + repr(cls.SCHEMA) + ")")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _fail(source, "schema_version must be a positive integer, got " + repr(version))
        if version > cls.SCHEMA_VERSION:
            raise _fail(
                source,
                "bundle manifest schema_version " + str(version) + " is newer than this edgeq-runtime reads ("
                + str(cls.SCHEMA_VERSION) + "); upgrade edgeq-runtime on the device",
            )
        known = ("schema", "schema_version", "model", "files", "inputs", "outputs", "precision", "target",
                 "tool_versions", "engine", "created") + (("decoder",) if version >= 2 else ())
        _no_unknown_keys(data, known, source, "manifest")
        for key in ("model", "files", "inputs", "outputs"):
            if key not in data:
                raise _fail(source, "manifest is missing required field '" + key + "'")

        model = _check_relative_path(data["model"], source, "model")
        files_raw = data["files"]
        if not isinstance(files_raw, list):
            raise _fail(source, "'files' must be a list")
        files = [FileEntry.from_dict(item, source, "files[" + str(i) + "]") for i, item in enumerate(files_raw)]
        seen = set()
        for entry in files:
            if entry.path in seen:
                raise _fail(source, "file " + repr(entry.path) + " is listed twice in 'files'")
            seen.add(entry.path)

        specs: Dict[str, List[TensorSpec]] = {}
        for key in ("inputs", "outputs"):
            raw = data[key]
            if not isinstance(raw, list) or not raw:
                raise _fail(source, "'" + key + "' must be a non-empty list of tensors")
            specs[key] = [TensorSpec.from_dict(item, source, key + "[" + str(i) + "]") for i, item in enumerate(raw)]
            names = [spec.name for spec in specs[key]]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise _fail(source, key + " names repeated: " + ", ".join(duplicates))

        engine = data.get("engine")
        if engine is not None:
            engine = _check_relative_path(engine, source, "engine")
        # Everything the runtime loads is covered by a checksum.
        decoder = DecoderSpec.from_dict(data["decoder"], source) if data.get("decoder") is not None else None
        tokenizer = decoder.tokenizer if decoder is not None else None
        if tokenizer is not None:
            _check_relative_path(tokenizer, source, "decoder.tokenizer")
        for role, path in (("model", model), ("engine", engine), ("decoder.tokenizer", tokenizer)):
            if path is not None and path not in seen:
                raise _fail(source, role + " " + repr(path) + " is not listed in 'files' (every loaded file needs a sha256)")

        target = _dict_field(data, "target", source)
        backend = target.get("backend")
        if backend is not None and backend not in TARGET_BACKENDS:
            raise _fail(source, "target.backend " + repr(backend) + " is not one of " + ", ".join(TARGET_BACKENDS))
        dla = target.get("dla_core")
        if dla is not None and (isinstance(dla, bool) or not isinstance(dla, int) or dla < 0):
            raise _fail(source, "target.dla_core must be a non-negative integer or null, got " + repr(dla))
        workspace = target.get("workspace_mib")
        if workspace is not None and (isinstance(workspace, bool) or not isinstance(workspace, (int, float)) or workspace <= 0):
            raise _fail(source, "target.workspace_mib must be a positive number or null, got " + repr(workspace))

        created = data.get("created", "")
        if not isinstance(created, str):
            raise _fail(source, "'created' must be an ISO time string, got " + repr(created))
        return cls(
            model=model,
            files=files,
            inputs=specs["inputs"],
            outputs=specs["outputs"],
            precision=_dict_field(data, "precision", source),
            target=target,
            tool_versions=_dict_field(data, "tool_versions", source),
            engine=engine,
            created=created,
            decoder=decoder,
            schema_version=version,
        )

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _fail(source, "not valid JSON (" + str(exc) + ")") from None
        return cls.from_dict(data, source)

    # ---- files ---------------------------------------------------------------------------------
    def write(self, bundle_dir: Union[str, Path]) -> Path:
        """Write ``manifest.json`` into ``bundle_dir`` atomically; returns its path."""
        return atomic_write_text(Path(bundle_dir) / MANIFEST_NAME, self.to_json())

    @classmethod
    def read(cls, bundle_dir: Union[str, Path]) -> Manifest:
        """Read a bundle's manifest; ``bundle_dir`` may also be the ``manifest.json`` itself."""
        path = Path(bundle_dir)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise BundleError(str(path) + ": no bundle manifest here (expected a folder with " + MANIFEST_NAME + ")")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(str(path) + ": cannot read bundle manifest (" + str(exc) + ")") from None
        return cls.from_json(text, source=str(path))

    @staticmethod
    def describe_files(bundle_dir: Union[str, Path], names: Iterable[str]) -> List[FileEntry]:
        """Checksum the named files (paths relative to ``bundle_dir``) for the ``files`` list."""
        root = Path(bundle_dir)
        entries = []
        for name in names:
            posix = _check_relative_path(str(PurePosixPath(Path(name).as_posix())), str(root), "file")
            path = root / posix
            if not path.is_file():
                raise BundleError(str(path) + ": bundle file does not exist")
            entries.append(FileEntry(path=posix, sha256=sha256_file(path), bytes=path.stat().st_size))
        return entries

    def verify(self, bundle_dir: Union[str, Path]) -> List[str]:
        """Problems with the bundle's files (missing, wrong size, wrong sha256), each naming the file."""
        root = Path(bundle_dir)
        if root.is_file():
            root = root.parent
        problems = []
        for entry in self.files:
            path = root / entry.path
            if not path.is_file():
                problems.append(entry.path + ": listed in " + MANIFEST_NAME + " but missing from " + str(root))
                continue
            size = path.stat().st_size
            if size != entry.bytes:
                problems.append(
                    entry.path + ": " + str(size) + " bytes, " + MANIFEST_NAME + " says " + str(entry.bytes)
                    + " (truncated or replaced?)"
                )
                continue
            digest = sha256_file(path)
            if digest != entry.sha256:
                problems.append(
                    entry.path + ": sha256 " + digest[:12] + "… does not match " + MANIFEST_NAME + " ("
                    + entry.sha256[:12] + "…): the file was modified or corrupted"
                )
        return problems

    def input_spec(self, name: str) -> Optional[TensorSpec]:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None


def verify_bundle(bundle_dir: Union[str, Path]) -> List[str]:
    """Read the bundle's manifest and list its file problems; an empty list means the bundle is intact.

    An unreadable or invalid manifest raises ``BundleError`` (there is nothing to verify against).
    """
    return Manifest.read(bundle_dir).verify(bundle_dir)
