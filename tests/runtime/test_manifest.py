"""The bundle manifest: round trip, validation with one-line messages, checksum verification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from edgeq_runtime.manifest import BundleError, FileEntry, Manifest, TensorSpec, verify_bundle


def _bundle(tmp_path: Path) -> tuple[Path, Manifest]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"not really onnx, only checksummed here")
    (bundle / "weights.bin").write_bytes(bytes(range(256)) * 4)
    manifest = Manifest(
        model="model.onnx",
        files=Manifest.describe_files(bundle, ["model.onnx", "weights.bin"]),
        inputs=[TensorSpec("input", "float32", ["batch", 3, 8, 8])],
        outputs=[TensorSpec("logits", "float32", ["batch", 10])],
        precision={"weights": "int8"},
        target={"name": "jetson-orin-nano", "backend": "tensorrt", "dla_core": None, "workspace_mib": 1024},
        tool_versions={"edgeq": "0.1.0"},
        created="2025-01-01T00:00:00+00:00",
    )
    manifest.write(bundle)
    return bundle, manifest


def test_describe_files_matches_hashlib(tmp_path):
    bundle, manifest = _bundle(tmp_path)
    data = (bundle / "weights.bin").read_bytes()
    entry = manifest.files[1]
    assert entry == FileEntry("weights.bin", hashlib.sha256(data).hexdigest(), len(data))


def test_round_trip_and_json_shape(tmp_path):
    bundle, manifest = _bundle(tmp_path)
    raw = json.loads((bundle / "manifest.json").read_text())
    assert raw["schema"] == "edgeq.bundle" and raw["schema_version"] == 2
    assert raw["inputs"][0] == {"name": "input", "dtype": "float32", "shape": ["batch", 3, 8, 8]}
    assert Manifest.read(bundle) == manifest
    assert Manifest.read(bundle / "manifest.json") == manifest
    assert verify_bundle(bundle) == []
    # the write is atomic: no temporary files left beside it
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx", "weights.bin"]


def test_verify_names_each_broken_file(tmp_path):
    bundle, _ = _bundle(tmp_path)
    data = bytearray((bundle / "weights.bin").read_bytes())
    data[10] ^= 0xFF  # same size, different content
    (bundle / "weights.bin").write_bytes(bytes(data))
    (bundle / "model.onnx").unlink()
    problems = verify_bundle(bundle)
    assert len(problems) == 2
    assert problems[0].startswith("model.onnx: listed in manifest.json but missing")
    assert problems[1].startswith("weights.bin: sha256") and "does not match" in problems[1]


def test_verify_reports_size_change(tmp_path):
    bundle, _ = _bundle(tmp_path)
    (bundle / "weights.bin").write_bytes(b"short")
    (problem,) = verify_bundle(bundle)
    assert problem.startswith("weights.bin: 5 bytes, manifest.json says 1024")


def _rewrite(bundle: Path, **changes: object) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    data.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"schema": "something.else"}, "not an edgeq bundle manifest"),
        ({"schema_version": 3}, "schema_version 3 is newer than this edgeq-runtime reads (2)"),
        ({"schema_version": 1, "decoder": None}, "unknown keys decoder"),  # version 1 had no decoder block
        ({"decoder": {"vocab_size": 8, "context_length": 4, "kv": {"layers": 1}}}, "decoder.kv.dtype None"),
        ({"decoder": {"vocab_size": 8, "context_length": 4, "tokenizer": "tokenizer.json",
                      "kv": {"layers": 1, "kv_heads": 1, "head_size": 4, "dtype": "float32", "bytes_per_token": 32}}},
         "decoder.tokenizer 'tokenizer.json' is not listed in 'files'"),
        ({"schema_version": "1"}, "schema_version must be a positive integer"),
        ({"model": "../model.onnx"}, "must be a relative path inside the bundle"),
        ({"model": "other.onnx"}, "model 'other.onnx' is not listed in 'files'"),
        ({"engine": "model.engine"}, "engine 'model.engine' is not listed in 'files'"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "x", "dtype": "float", "shape": [1]}]}, "dtype 'float' is not one of"),
        ({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1]}]}, "must hold non-negative ints"),
        ({"target": {"backend": "openvino"}}, "target.backend 'openvino' is not one of tensorrt, ort"),
        ({"surprise": 1}, "unknown keys surprise"),
        ({"files": [{"path": "model.onnx", "sha256": "abc", "bytes": 1}]}, "must be 64 lowercase hex digits"),
    ],
)
def test_invalid_manifests_are_one_line_errors_naming_the_file(tmp_path, changes, expected):
    bundle, _ = _bundle(tmp_path)
    _rewrite(bundle, **changes)
    with pytest.raises(BundleError) as info:
        Manifest.read(bundle)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert str(bundle / "manifest.json") in message


def test_version_1_manifests_are_still_read(tmp_path):
    """A bundle written before the decoder block (schema 1) opens unchanged: no decoder, same files."""
    bundle, manifest = _bundle(tmp_path)
    data = json.loads((bundle / "manifest.json").read_text())
    data["schema_version"] = 1
    del data["decoder"]
    (bundle / "manifest.json").write_text(json.dumps(data))
    old = Manifest.read(bundle)
    assert old.schema_version == 1 and old.decoder is None and old.files == manifest.files
    assert verify_bundle(bundle) == []


def test_decoder_block_round_trips(tmp_path):
    from edgeq_runtime.decoder_spec import DecoderSpec, GenerationSpec, KVSpec

    bundle, manifest = _bundle(tmp_path)
    manifest.decoder = DecoderSpec(vocab_size=32, context_length=64,
                                   kv=KVSpec(2, 1, 8, "float32", 128, True, False), tokenizer=None,
                                   generation=GenerationSpec(1, [2], None, "{{ x }}", {"eos_token_ids": "here"}))
    manifest.write(bundle)
    assert Manifest.read(bundle).decoder == manifest.decoder
    data = json.loads((bundle / "manifest.json").read_text())
    data["decoder"]["generation"]["eos_token_ids"] = [40]
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="token id 40 is outside the vocabulary"):
        Manifest.read(bundle)


def test_not_json_and_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="no bundle manifest here"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        Manifest.read(tmp_path)


def test_to_json_refuses_to_write_an_invalid_manifest(tmp_path):
    manifest = Manifest(
        model="model.onnx", files=[], inputs=[TensorSpec("x", "float32", [1])], outputs=[TensorSpec("y", "float32", [1])]
    )
    with pytest.raises(BundleError, match="not listed in 'files'"):
        manifest.write(tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_describe_missing_file(tmp_path):
    with pytest.raises(BundleError, match="bundle file does not exist"):
        Manifest.describe_files(tmp_path, ["model.onnx"])
