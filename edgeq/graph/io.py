"""ONNX model I/O that copes with real models.

Models above protobuf's 2 GB limit must keep their weights in an external data file, and a
half-written model is worse than none, so saving always goes through a temporary file and a
rename, and the result is validated with ``onnx.checker`` (full check, as far as the checker
knows the ops: :mod:`edgeq.graph.check`) before it replaces anything. This is the lowest I/O layer: it reads and writes files and never imports the
frontends (a ``file.py:factory`` spec is resolved to a file above it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from edgeq.errors import ModelLoadError
from edgeq.fileio import OutputSet
from edgeq.graph.check import check_model_file

_log = logging.getLogger("edgeq.graph")

# Protobuf refuses to serialise a message above 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file (or a bundle folder's model.onnx), with a one-line error for anything else.

    A ``file.py:factory`` spec is not a file: callers that accept one resolve it first with
    ``edgeq.frontends.resolve.resolve_model`` (this layer sits below the frontends).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "model.onnx"
        if not candidate.is_file():
            raise ModelLoadError(f"{path}: is a directory without a model.onnx")
        path = candidate
    if not path.is_file():
        raise ModelLoadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty, expected an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model (truncated or not ONNX: {exc})") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(f"{path}: not a valid ONNX model (no graph or opset import)")
    missing = undefined_input(model.graph)
    if missing is not None:
        node, name = missing
        raise ModelLoadError(f"{path}: node {node.name or node.op_type!r} ({node.op_type}) reads {name!r}, "
                             "which no input, initializer or node defines")
    if load_external_data:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # OSError, or onnx's ValidationError for a location outside the folder
            detail = " ".join(str(exc).split())
            raise ModelLoadError(f"{path}: cannot load its external data ({detail})") from None
    return model


def undefined_input(graph: onnx.GraphProto, outer: frozenset[str] = frozenset()) -> tuple[onnx.NodeProto, str] | None:
    """The first (node, tensor) where a node reads a name nothing defines, subgraphs included.

    onnxruntime and the checker refuse such a graph with a multi-line dump; saying which node and
    which name, once, at load time, is what the user can act on. Order is not checked here.
    """
    defined = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    defined |= {t.name for t in graph.sparse_initializer}
    defined |= {o for node in graph.node for o in node.output}
    for node in graph.node:
        for name in node.input:
            if name not in defined:
                return node, name
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                found = undefined_input(sub, frozenset(defined))
                if found is not None:
                    return found
    return None


def _needs_external_data(model: onnx.ModelProto) -> bool:
    return model.ByteSize() > EXTERNAL_DATA_THRESHOLD


def save_model(
    model: onnx.ModelProto,
    path: str | Path,
    external_data: bool | None = None,
    check: bool = True,
    outputs: OutputSet | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write ``model`` atomically; weights go to ``<name>.data`` when asked or when over 2 GB.

    The model is checked (``onnx.checker`` full check, with shape inference) on the temporary
    copy, so a model that fails the check never replaces the user's file. Nodes the checker has
    no schema for but onnxruntime defines are left out of that check (:mod:`edgeq.graph.check`),
    and said once: appended to ``notes`` when the caller collects them (a quantization
    summary), otherwise logged as a warning. With ``outputs`` the files are only staged, and land
    when the caller commits that set with its other outputs.
    """
    path = Path(path)
    own = outputs is None
    staged = OutputSet() if outputs is None else outputs
    try:
        use_external = _needs_external_data(model) if external_data is None else external_data
        data_name = path.name + ".data"
        tmp_dir = staged.scratch_dir(path)
        tmp_model = tmp_dir / path.name
        if use_external:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(
                copy,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            # Drop stale external references: every tensor is inline in the proto we hold.
            onnx.save_model(model, str(tmp_model))
        if check:
            note = check_model_file(tmp_model).note
            if note is not None and notes is not None:
                if note not in notes:
                    notes.append(note)
            elif note is not None:
                _log.warning("%s: %s", path.name, note)
        if use_external:
            staged.adopt(tmp_dir / data_name, path.parent / data_name)
        staged.adopt(tmp_model, path)
    except BaseException:
        if own:
            staged.discard()
        raise
    if own:
        staged.commit()
    return path


def model_files(path: str | Path) -> list[Path]:
    """The model file and every external-data file it names: what a command reads of a model."""
    path = Path(path)
    files = [path]
    with contextlib.suppress(Exception):  # an unreadable model fails later, with its own message
        model = onnx.load(str(path), load_external_data=False)
        graphs = [model.graph]
        while graphs:
            graph = graphs.pop()
            for tensor in graph.initializer:
                for entry in tensor.external_data:
                    if entry.key == "location" and (path.parent / entry.value) not in files:
                        files.append(path.parent / entry.value)
            graphs += [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return files


def lower_ir_version(model: onnx.ModelProto) -> int:
    """Set the model's IR version to the lowest its opsets allow; return it.

    onnx writes its newest IR version by default, which the runtimes on the boards refuse
    (onnxruntime 1.19, the last for JetPack 5's Python 3.8, reads up to IR 10; TensorRT 8's
    parser is older still). The opset imports, not the writer, decide what is needed.
    """
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = min(int(model.ir_version), int(needed)) if model.ir_version else int(needed)
    return int(model.ir_version)


def model_sha256(path: str | Path) -> str:
    """Digest of the model file and its external data files, so a table is tied to one model."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    data = path.with_name(path.name + ".data")
    if data.is_file():
        with open(data, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def serialized_for_ort(model: onnx.ModelProto) -> bytes:
    """Bytes an ``onnxruntime.InferenceSession`` can take directly (models under 2 GB)."""
    return model.SerializeToString()


@contextlib.contextmanager
def temporary_model_file(model: onnx.ModelProto) -> Iterator[Path]:
    """A model on disk for tools that need a path (onnxruntime above 2 GB, peer tools)."""
    tmp_dir = Path(tempfile.mkdtemp(prefix="edgeq-"))
    try:
        target = tmp_dir / "model.onnx"
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=_needs_external_data(model),
            all_tensors_to_one_file=True,
            location="model.onnx.data",
        )
        yield target
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
