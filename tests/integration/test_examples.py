"""The real example models and data sets: faithful to their weights, exported as promised, splits disjoint."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from examples import datasets, models


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _row_digests(array: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest() for row in array}


# --- fast checks of the building blocks -------------------------------------------------------


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": codes[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_safetensors_reader_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {
        "a.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "ids": np.arange(7, dtype=np.int64).reshape(1, 7),
        "half": rng.standard_normal(4).astype(np.float16),
        "scalar": np.array(2.5, dtype=np.float32),
    }
    path = tmp_path / "t.safetensors"
    _write_safetensors(path, tensors)
    loaded = models.read_safetensors(path)
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable


def test_safetensors_reader_rejects_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    _write_safetensors(path, {"w": np.ones((4, 4), np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="tensor w spans"):
        models.read_safetensors(path)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(224, 3, 2, (0, 1)), (112, 5, 2, (1, 2)), (56, 3, 2, (0, 1)), (28, 5, 1, (2, 2)), (7, 3, 1, (1, 1))],
)
def test_tf_same_padding(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    before, after = models.tf_same_padding(size, kernel, stride)
    assert (before, after) == expected
    assert (size + before + after - kernel) // stride + 1 == -(
        -size // stride
    )  # output = ceil(size / stride)


def _reduce_mean_model(opset: int, noop: int = 0) -> onnx.ModelProto:
    node = helper.make_node(
        "ReduceMean", ["x", "axes"], ["y"], keepdims=0, noop_with_empty_axes=noop, name="mean"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_lower_opset_converts_reduce_mean_and_keeps_results() -> None:
    model = _reduce_mean_model(18)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    models._lower_opset(model, 17)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert not model.graph.initializer  # the axes tensor became an attribute
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, x.mean(axis=(2, 3)), rtol=1e-5)


def test_lower_opset_refuses_what_it_cannot_express() -> None:
    with pytest.raises(RuntimeError, match="noop_with_empty_axes"):
        models._lower_opset(_reduce_mean_model(18, noop=1), 17)
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")
    graph = helper.make_graph(
        [pad],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "pads")],
    )
    with pytest.raises(RuntimeError, match="Pad"):
        models._lower_opset(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), 17)


def test_sentences_are_prose_and_unique() -> None:
    sentences = datasets.documentation_sentences()
    assert len(sentences) >= 768  # enough for the default 512 + 256 split
    assert len({s.casefold() for s in sentences}) == len(sentences)
    for sentence in sentences:
        assert sentence[0].isupper() and sentence[-1] in ".!?", sentence
        assert "::=" not in sentence and ">>>" not in sentence and "\n" not in sentence
    assert datasets.documentation_sentences() == sentences


def test_small_sets_are_deterministic_and_cached(tmp_path: Path) -> None:
    first = datasets.build_image_sets(tmp_path / "a", n_calib=6, n_eval=4)
    again = datasets.build_image_sets(tmp_path / "b", n_calib=6, n_eval=4)
    for one, two in zip(first, again, strict=True):
        assert one.read_bytes() == two.read_bytes()
    text_a = datasets.build_text_sets(tmp_path / "a", n_calib=5, n_eval=3)
    text_b = datasets.build_text_sets(tmp_path / "b", n_calib=5, n_eval=3)
    for one, two in zip(text_a, text_b, strict=True):
        assert one.read_bytes() == two.read_bytes()

    stamp = first[0].stat().st_mtime_ns
    assert datasets.build_image_sets(tmp_path / "a", n_calib=6, n_eval=4) == first
    assert first[0].stat().st_mtime_ns == stamp  # fresh: reused, not rewritten
    assert datasets.build_image_sets(tmp_path / "a", n_calib=7, n_eval=4) == first
    assert datasets.npz_member_shape(first[0], "input") == (7, 3, 224, 224)  # other size: rebuilt
    os.utime(first[1], (0, 0))  # older than its sources: stale, rebuilt
    datasets.build_image_sets(tmp_path / "a", n_calib=7, n_eval=4)
    assert first[1].stat().st_mtime > 0


# --- the real artefacts -----------------------------------------------------------------------


@pytest.mark.slow
def test_efficientnet_state_dict_loads_strictly() -> None:
    import torch

    module = models.efficientnet_lite0_module()
    assert sum(p.numel() for p in module.parameters()) == 4_652_008
    state = torch.load(models.efficientnet_weights_path(), map_location="cpu", weights_only=True)
    state["_blocks.0._se_reduce.weight"] = torch.zeros(8, 32, 1, 1)  # a key the lite variant lacks
    with pytest.raises(RuntimeError, match="Unexpected key"):
        module.load_state_dict(state, strict=True)


@pytest.mark.slow
def test_efficientnet_onnx_contract(efficientnet_model: Path) -> None:
    model = onnx.load(efficientnet_model)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and inp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert isinstance(_dims(inp)[0], str) and _dims(inp)[1:] == [3, 224, 224]
    assert out.name == "logits" and _dims(out) == [_dims(inp)[0], 1000]
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["BatchNormalization"] == 49 and ops["Conv"] == 49  # BN left for edgeq to fold
    assert "Pad" not in ops  # TF SAME padding lives in the Conv pads
    inits = {t.name for t in model.graph.initializer}
    assert all(node.input[1] in inits for node in model.graph.node if node.op_type in ("Conv", "Gemm"))
    session = _session(efficientnet_model)
    _, batch = models.photo_batch()
    for n in (1, 3):
        assert session.run(None, {"input": batch[:n]})[0].shape == (n, 1000)


@pytest.mark.slow
def test_efficientnet_onnx_matches_torch(efficientnet_model: Path) -> None:
    assert models.verify_efficientnet_lite0(efficientnet_model) < 1e-4


@pytest.mark.slow
def test_efficientnet_classifies_real_photos(efficientnet_model: Path) -> None:
    names, batch = models.photo_batch()
    logits = _session(efficientnet_model).run(None, {"input": batch})[0]
    top1 = dict(zip(names, logits.argmax(axis=1).tolist(), strict=True))
    for photo, expected in models.PHOTO_EXPECTED_CLASSES.items():
        assert top1[photo] in expected, (photo, top1[photo])
    assert top1["chelsea"] in range(281, 286)  # a cat


@pytest.mark.slow
def test_minilm_state_dict_loads_strictly() -> None:
    import torch

    module = models.minilm_module()
    tensors = models.read_safetensors(models.minilm_dir() / "model.safetensors")
    state = {name: torch.from_numpy(array) for name, array in tensors.items()}
    assert set(module.state_dict()) == set(state)
    del state["encoder.layer.5.output.dense.bias"]
    with pytest.raises(RuntimeError, match="Missing key"):
        module.load_state_dict(state, strict=True)


@pytest.mark.slow
def test_minilm_onnx_contract(minilm_model: Path) -> None:
    model = onnx.load(minilm_model)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == list(models.MINILM_INPUTS)
    batch, sequence = _dims(model.graph.input[0])
    assert isinstance(batch, str) and isinstance(sequence, str)
    for value in model.graph.input:
        assert value.type.tensor_type.elem_type == TensorProto.INT64 and _dims(value) == [batch, sequence]
    (out,) = model.graph.output
    assert out.name == "last_hidden_state" and _dims(out) == [batch, sequence, 384]

    inits = {t.name: t for t in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    assert "embeddings.word_embeddings.weight" in {n.input[0] for n in gathers}
    weighted = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]
    assert len(weighted) == 6 * 6  # q, k, v, attention out, intermediate, output per layer
    shapes = Counter(tuple(inits[n.input[1]].dims) for n in weighted)
    assert shapes == {(384, 384): 24, (384, 1536): 6, (1536, 384): 6}

    session = _session(minilm_model)
    for rows, length in ((1, 7), (3, 128)):
        feeds = {name: np.ones((rows, length), dtype=np.int64) for name in models.MINILM_INPUTS}
        feeds["token_type_ids"][:] = 0
        assert session.run(None, feeds)[0].shape == (rows, length, 384)


@pytest.mark.slow
def test_minilm_onnx_matches_torch(minilm_model: Path) -> None:
    assert models.verify_minilm(minilm_model) < 1e-3


@pytest.mark.slow
def test_minilm_ranks_paraphrase_above_unrelated(minilm_model: Path) -> None:
    feeds = models.tokenize(models.PARAPHRASE_PROBE)
    hidden = _session(minilm_model).run(None, feeds)[0]
    anchor, paraphrase, unrelated = models.sentence_embeddings(hidden, feeds["attention_mask"])
    assert anchor @ paraphrase > anchor @ unrelated + 0.2
    # Padding must not change a sentence's embedding: the mask really masks.
    short = models.tokenize(models.PARAPHRASE_PROBE[:1], max_length=24)
    alone = models.sentence_embeddings(_session(minilm_model).run(None, short)[0], short["attention_mask"])[0]
    np.testing.assert_allclose(alone, anchor, atol=1e-5)


@pytest.mark.slow
def test_image_sets_shapes_and_disjoint_splits(image_sets: tuple[Path, Path]) -> None:
    calib_path, eval_path = image_sets
    for path, rows in ((calib_path, 1024), (eval_path, 500)):
        with zipfile.ZipFile(path) as archive:
            assert archive.namelist() == ["input.npy"]
            assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        assert datasets.npz_member_shape(path, "input") == (rows, 3, 224, 224)
    calib = np.load(calib_path)["input"]
    evaluation = np.load(eval_path)["input"]
    assert calib.dtype == evaluation.dtype == np.float32
    low = (0 - max(models.PIXEL_MEAN)) / min(models.PIXEL_STD)
    high = (255 - min(models.PIXEL_MEAN)) / min(models.PIXEL_STD)
    assert calib.min() >= low and calib.max() <= high
    assert calib.std() > 0.2  # real pictures, not constant frames
    assert not _row_digests(calib) & _row_digests(evaluation)

    calib_photos = {s["photo"] for s in json.loads(datasets.sidecar_path(calib_path).read_text())["samples"]}
    eval_photos = Counter(
        s["photo"] for s in json.loads(datasets.sidecar_path(eval_path).read_text())["samples"]
    )
    assert calib_photos == set(datasets.CALIB_PHOTOS)
    held_out = sum(count for photo, count in eval_photos.items() if photo not in calib_photos)
    assert held_out == 250 and set(datasets.EVAL_ONLY_PHOTOS) <= set(eval_photos)


@pytest.mark.slow
def test_image_eval_crops_are_recognisable(efficientnet_model: Path, image_sets: tuple[Path, Path]) -> None:
    """Crops are preprocessed like the model expects: crops of the coffee photo are still a cup."""
    _, eval_path = image_sets
    samples = json.loads(datasets.sidecar_path(eval_path).read_text())["samples"]
    rows = [i for i, s in enumerate(samples) if s["photo"] == "skimage:coffee"][:20]
    batch = np.load(eval_path)["input"][rows]
    top1 = _session(efficientnet_model).run(None, {"input": batch})[0].argmax(axis=1)
    assert np.isin(top1, models.PHOTO_EXPECTED_CLASSES["coffee"]).mean() >= 0.8


@pytest.mark.slow
def test_text_sets_shapes_and_disjoint_splits(text_sets: tuple[Path, Path]) -> None:
    calib_path, eval_path = text_sets
    loaded = {}
    for path, rows in ((calib_path, 512), (eval_path, 256)):
        with zipfile.ZipFile(path) as archive:
            assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        data = dict(np.load(path))
        assert sorted(data) == sorted(models.MINILM_INPUTS)
        for array in data.values():
            assert array.dtype == np.int64 and array.shape == (rows, 128)
        ids, mask = data["input_ids"], data["attention_mask"]
        assert (ids[:, 0] == 101).all()  # [CLS]
        assert ((ids != 0) == (mask == 1)).all()  # padding is exactly where the mask is 0
        lengths = mask.sum(axis=1)
        assert (ids[np.arange(rows), lengths - 1] == 102).all()  # [SEP] closes every sentence
        assert (data["token_type_ids"] == 0).all()
        loaded[path] = data
    calib_ids, eval_ids = loaded[calib_path]["input_ids"], loaded[eval_path]["input_ids"]
    assert not _row_digests(calib_ids) & _row_digests(eval_ids)
    sentences = [
        {s["sentence"] for s in json.loads(datasets.sidecar_path(p).read_text())["samples"]}
        for p in text_sets
    ]
    assert len(sentences[0]) == 512 and len(sentences[1]) == 256 and not sentences[0] & sentences[1]
