"""Recipes: images and text turned into model inputs, checked against numpy references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeq.data import load_data
from edgeq.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _model(inputs: list[tuple[str, int, list]]) -> onnx.ModelProto:
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in inputs]
    graph = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in inputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _write_images(folder: Path, count: int, height: int, width: int) -> np.ndarray:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"img_{i:02d}.png")
    return pixels


def _recipe(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_image_folder_normalize_and_layout(tmp_path: Path) -> None:
    pixels = _write_images(tmp_path / "images", 5, 6, 7)
    model = _model([("image", TensorProto.FLOAT, ["n", 3, 6, 7])])
    recipe = _recipe(tmp_path / "r.toml", 'kind = "image"\nsource = "images"\n[image]\nresize = 0\ncrop = 0\n')
    source = load_data(recipe, model, batch_size=2)
    got = np.concatenate([b["image"] for b in source])
    reference = ((pixels.astype(np.float64) / 255 - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32 and source.num_samples == 5


def test_resize_center_crop_nhwc_bgr(tmp_path: Path) -> None:
    pixels = _write_images(tmp_path / "images", 2, 256, 320)  # shorter side already 256: resize is identity
    model = _model([("x", TensorProto.FLOAT, ["n", 224, 224, 3])])
    recipe = _recipe(
        tmp_path / "r.toml",
        'kind = "image"\nsource = "images"\n[image]\nresize = 256\ncrop = 224\nlayout = "NHWC"\ncolor = "BGR"\n'
        "mean = [0.5]\nstd = [0.25]\n",
    )
    got = next(iter(load_data(recipe, model)))["x"]
    crop = pixels[:, 16:240, 48:272, ::-1].astype(np.float64)
    np.testing.assert_allclose(got, (crop / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def test_raw_uint8_npz_source_and_resize_shape(tmp_path: Path) -> None:
    raw = np.random.default_rng(1).integers(0, 256, size=(3, 300, 400, 3), dtype=np.uint8)
    np.savez(tmp_path / "raw.npz", images=raw)
    model = _model([("input", TensorProto.FLOAT, ["batch", 3, 224, 224])])
    recipe = _recipe(tmp_path / "r.toml", 'kind = "image"\nsource = "raw.npz"\n[image]\nresize = 256\ncrop = 224\n')
    batches = list(load_data(recipe, model, batch_size=2))
    assert [b["input"].shape for b in batches] == [(2, 3, 224, 224), (1, 3, 224, 224)]


def test_shipped_imagenet_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_images(tmp_path / "photos", 3, 240, 300)
    model = _model([("input", TensorProto.FLOAT, ["batch", 3, 224, 224])])
    monkeypatch.delenv("EDGEQ_CALIB_IMAGES", raising=False)
    with pytest.raises(ConfigError, match=r"\$EDGEQ_CALIB_IMAGES, which is not set"):
        load_data(ROOT / "calibration" / "imagenet-224.toml", model)
    monkeypatch.setenv("EDGEQ_CALIB_IMAGES", str(tmp_path / "photos"))
    source = load_data(ROOT / "calibration" / "imagenet-224.toml", model, batch_size=4)
    batch = next(iter(source))["input"]
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    # Normalised pixels lie within [(0 - mean)/std, (1 - mean)/std] per channel.
    low, high = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert (batch.min(axis=(0, 2, 3)) >= low - 1e-5).all() and (batch.max(axis=(0, 2, 3)) <= high + 1e-5).all()


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "edge": 4, "boards": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


def test_text_recipe_tokenizes_and_pads(tmp_path: Path) -> None:
    _tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "text.txt").write_text("hello world\n\nedge boards hello unknown\nhello " + "world " * 20 + "\n")
    model = _model([("input_ids", TensorProto.INT64, ["b", "s"]), ("attention_mask", TensorProto.INT64, ["b", "s"])])
    recipe = _recipe(
        tmp_path / "r.toml",
        'kind = "text"\nsource = "text.txt"\n[text]\ntokenizer = "tokenizer.json"\nmax_length = 8\n',
    )
    source = load_data(recipe, model, batch_size=8)
    assert source.num_samples == 3 and source.input_names == ["input_ids", "attention_mask"]
    batch = next(iter(source))
    np.testing.assert_array_equal(batch["input_ids"][0], [2, 3, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["input_ids"][1], [4, 5, 2, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["input_ids"][2], [2] + [3] * 7)  # truncated at max_length
    np.testing.assert_array_equal(batch["attention_mask"][:2], [[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    assert batch["input_ids"].dtype == np.int64


def test_shipped_bert_recipe_with_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_TOKENIZER", str(_tokenizer(tmp_path / "tok.json")))
    (tmp_path / "s.jsonl").write_text('{"text": "hello edge"}\n{"text": "boards"}\n')
    monkeypatch.setenv("EDGEQ_CALIB_TEXT", str(tmp_path / "s.jsonl"))
    names = ("input_ids", "attention_mask", "token_type_ids")
    model = _model([(n, TensorProto.INT64, ["batch", "sequence"]) for n in names])
    batch = next(iter(load_data(ROOT / "calibration" / "bert-128.toml", model)))
    assert {k: v.shape for k, v in batch.items()} == {n: (2, 128) for n in names}
    assert batch["input_ids"][0, :3].tolist() == [2, 4, 0] and int(batch["token_type_ids"].sum()) == 0
    with pytest.raises(DataError, match=r"seq.*128|128"):
        load_data(ROOT / "calibration" / "bert-128.toml", _model([(n, TensorProto.INT64, ["batch", 64]) for n in names]))


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('kind = "audio"\nsource = "x"\n', "expected \"image\" or \"text\""),
        ('kind = "image"\n', "missing source"),
        ('kind = "image"\nsource = "x"\n[image]\nlayout = "CHW"\n', "layout"),
        ('kind = "image"\nsource = "x"\n[image]\nstd = [0.0, 1.0, 1.0]\n', "std and scale must be positive"),
        ('kind = "image"\nsource = "x"\n[image]\nsize = 3\n', "unknown key(s) size"),
        ('kind = "text"\nsource = "x"\n[text]\npadding = "longest"\n', "max_length"),
        ("kind = ", "not valid TOML"),
    ],
)
def test_bad_recipes(tmp_path: Path, body: str, fragment: str) -> None:
    model = _model([("input", TensorProto.FLOAT, ["batch", 3, 224, 224])])
    with pytest.raises(ConfigError) as info:
        load_data(_recipe(tmp_path / "bad.toml", body), model)
    assert fragment in str(info.value) and "bad.toml" in str(info.value)


def test_missing_source_folder(tmp_path: Path) -> None:
    model = _model([("input", TensorProto.FLOAT, ["batch", 3, 224, 224])])
    with pytest.raises(DataError, match="not found"):
        load_data(_recipe(tmp_path / "r.toml", 'kind = "image"\nsource = "nowhere"\n'), model)
