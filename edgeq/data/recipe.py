"""Calibration recipes: a TOML file that turns a folder of images or a text file into samples.

Calibration data must be preprocessed exactly as the model saw it in training, or the ranges
measured are the ranges of the wrong distribution. A recipe writes that preprocessing down
once (resize, crop, mean/std, layout, dtype; or tokenizer and length) so the same file can
be reused across runs and boards instead of living in an ad-hoc script.

Paths in a recipe may use ``$VARIABLES`` and ``~``; relative paths are relative to the
recipe file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.data.arrays import MappedRows, MemoryArray, RowArray, open_npy, open_npz
from edgeq.data.source import InputSpec
from edgeq.errors import ConfigError, DataError, MissingDependencyError
from edgeq.serialization import load_toml

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")
TEXT_SUFFIXES = (".txt", ".jsonl")
_UNSET_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class ImageRecipe:
    resize: int | None = 256  # shorter side, before the crop; 0 keeps the image's size
    crop: int | tuple[int, int] | None = 224  # centre crop (square or height, width); 0 for none
    scale: float = 255.0  # pixel values are divided by this before mean/std
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    dtype: str = "float32"
    color: str = "RGB"
    interpolation: str = "bilinear"
    input: str | None = None


@dataclass(frozen=True)
class TextRecipe:
    tokenizer: str = "tokenizer.json"
    max_length: int = 128
    padding: str = "max_length"
    truncation: bool = True
    dtype: str = "int64"
    json_field: str = "text"  # key read from each line of a .jsonl file
    # model input name -> tokenizers Encoding attribute
    inputs: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    )


@dataclass(frozen=True)
class Recipe:
    path: Path
    kind: str  # "image" | "text"
    source: Path
    image: ImageRecipe | None = None
    text: TextRecipe | None = None


def _resolve(recipe_path: Path, value: str, key: str) -> Path:
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = _UNSET_VAR.search(expanded)
    if unset:
        raise ConfigError(
            f"{recipe_path}: {key} = {value!r} uses the environment variable ${unset.group(1)}, which is not set"
        )
    path = Path(expanded)
    return path if path.is_absolute() else (recipe_path.parent / path)


def _take(table: dict[str, Any], cls: type, recipe_path: Path, section: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{recipe_path}: unknown key(s) {', '.join(unknown)} in [{section}]; known: {', '.join(sorted(known))}")
    values = dict(table)
    for key in ("mean", "std"):
        if key in values:
            values[key] = tuple(float(v) for v in values[key])
    if "crop" in values and isinstance(values["crop"], list):
        values["crop"] = tuple(int(v) for v in values["crop"])
    return cls(**values)


def read_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    doc = load_toml(path)
    kind = doc.get("kind")
    if kind not in ("image", "text"):
        raise ConfigError(f"{path}: kind = {kind!r}; expected \"image\" or \"text\"")
    if "source" not in doc or not isinstance(doc["source"], str):
        raise ConfigError(f"{path}: missing source = \"<folder or file with the {kind} data>\"")
    source = _resolve(path, doc["source"], "source")
    extra = sorted(set(doc) - {"kind", "source", "image", "text", "description"})
    if extra:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(extra)}")
    try:
        if kind == "image":
            image = _take(doc.get("image", {}), ImageRecipe, path, "image")
            _check_image(image, path)
            return Recipe(path, kind, source, image=image)
        text = _take(doc.get("text", {}), TextRecipe, path, "text")
        if text.padding != "max_length":
            raise ConfigError(f"{path}: [text] padding = {text.padding!r}; only \"max_length\" gives fixed-shape batches")
        if text.max_length < 1:
            raise ConfigError(f"{path}: [text] max_length must be positive, got {text.max_length}")
        return Recipe(path, kind, source, text=text)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid recipe ({exc})") from None


def _check_image(image: ImageRecipe, path: Path) -> None:
    if image.layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"{path}: [image] layout = {image.layout!r}; expected \"NCHW\" or \"NHWC\"")
    if image.color not in ("RGB", "BGR", "L"):
        raise ConfigError(f"{path}: [image] color = {image.color!r}; expected \"RGB\", \"BGR\" or \"L\"")
    channels = 1 if image.color == "L" else 3
    for key in ("mean", "std"):
        values = getattr(image, key)
        if len(values) not in (1, channels):
            raise ConfigError(f"{path}: [image] {key} has {len(values)} values; expected 1 or {channels}")
        if not all(np.isfinite(values)):
            raise ConfigError(f"{path}: [image] {key} must be finite numbers")
    if any(s <= 0 for s in image.std) or image.scale <= 0:
        raise ConfigError(f"{path}: [image] std and scale must be positive (they divide the pixels)")
    if np.dtype(image.dtype).kind != "f":
        raise ConfigError(f"{path}: [image] dtype = {image.dtype!r}; expected a float type such as float32")
    if image.interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
        raise ConfigError(f"{path}: [image] interpolation = {image.interpolation!r}; expected bilinear, bicubic, nearest or lanczos")


# --- images ------------------------------------------------------------------------------


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("pillow", "examples", "reading image files for calibration") from None
    return Image


def preprocess_image(pixels: Any, image: ImageRecipe) -> np.ndarray:
    """One PIL image (or HWC uint8 array) -> one model sample, as torchvision's eval transform does."""
    pil = _pil()
    picture = pixels if isinstance(pixels, pil.Image) else pil.fromarray(np.asarray(pixels))
    picture = picture.convert("L" if image.color == "L" else "RGB")
    resample = {"bilinear": pil.BILINEAR, "bicubic": pil.BICUBIC, "nearest": pil.NEAREST, "lanczos": pil.LANCZOS}[image.interpolation]
    if image.resize:
        width, height = picture.size
        short = min(width, height)
        new = (max(1, round(width * image.resize / short)), max(1, round(height * image.resize / short)))
        picture = picture.resize(new, resample)
    if image.crop:
        crop_h, crop_w = (image.crop, image.crop) if isinstance(image.crop, int) else image.crop
        width, height = picture.size
        if crop_w > width or crop_h > height:
            raise DataError(f"crop {crop_h}x{crop_w} is larger than the resized image {height}x{width}")
        left, top = round((width - crop_w) / 2), round((height - crop_h) / 2)
        picture = picture.crop((left, top, left + crop_w, top + crop_h))
    pixels_hwc = np.asarray(picture, dtype=np.float32)
    if pixels_hwc.ndim == 2:
        pixels_hwc = pixels_hwc[:, :, None]
    if image.color == "BGR":
        pixels_hwc = pixels_hwc[:, :, ::-1]
    mean, std = np.asarray(image.mean, np.float32), np.asarray(image.std, np.float32)
    normalized = (pixels_hwc / np.float32(image.scale) - mean) / std
    if image.layout == "NCHW":
        normalized = normalized.transpose(2, 0, 1)
    return np.ascontiguousarray(normalized, dtype=np.dtype(image.dtype))


def _image_rows(recipe: Recipe, image: ImageRecipe) -> RowArray:
    source = recipe.source
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder named by {recipe.path}")

        def load(index: int) -> Any:
            pil = _pil()
            try:
                with pil.open(files[index]) as handle:
                    handle.load()
                    return handle.copy()
            except (OSError, ValueError) as exc:
                raise DataError(f"{files[index]}: cannot decode image ({exc})") from None

        count = len(files)
    elif source.is_file() and source.suffix in (".npz", ".npy"):
        # Raw images as arrays: N x H x W (x C), typically uint8.
        raw = open_npy(source) if source.suffix == ".npy" else _single_member(source)
        if len(raw.shape) not in (3, 4):
            raise DataError(f"{raw.label}: raw images must be N x H x W (x C), got shape {list(raw.shape)}")
        count = len(raw)

        def load(index: int) -> Any:
            return raw.read(index, index + 1)[0].squeeze()

    elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        count = 1

        def load(index: int) -> Any:
            return _pil().open(source)

    else:
        raise DataError(f"{source}: not found (the source of {recipe.path}); expected a folder of images, an image, or an .npz/.npy of images")
    first = preprocess_image(load(0), image)
    make_row: Callable[[int], np.ndarray] = lambda index: preprocess_image(load(index), image)  # noqa: E731
    rows = MappedRows(count, first.shape, first.dtype, make_row, f"{source} (via {recipe.path.name})")
    # Pixels are finite and std/scale are checked positive: nothing to scan for NaN.
    rows.finite_guaranteed = True  # type: ignore[attr-defined]
    return rows


def _single_member(path: Path) -> RowArray:
    members = open_npz(path)
    if len(members) != 1:
        raise DataError(f"{path}: an image source .npz must hold one array, found {', '.join(members) or 'none'}")
    return next(iter(members.values()))


# --- text --------------------------------------------------------------------------------


def _read_texts(source: Path, text: TextRecipe) -> list[str]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{source}: no .txt or .jsonl files in the folder")
    elif source.is_file():
        files = [source]
    else:
        raise DataError(f"{source}: not found; expected a .txt (one sample per line), a .jsonl or a folder of them")
    texts: list[str] = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if file.suffix.lower() == ".jsonl":
                try:
                    value = json.loads(line)[text.json_field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{file}:{number}: not a JSON object with a {text.json_field!r} string") from None
                if not isinstance(value, str):
                    raise DataError(f"{file}:{number}: {text.json_field!r} is not a string")
                texts.append(value)
            else:
                texts.append(line)
    return texts


def _text_arrays(recipe: Recipe, text: TextRecipe, specs: list[InputSpec]) -> dict[str, RowArray]:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError("tokenizers", "examples", "tokenizing text for calibration") from None
    tokenizer_path = _resolve(recipe.path, text.tokenizer, "tokenizer")
    if not tokenizer_path.is_file():
        raise DataError(f"{tokenizer_path}: tokenizer file not found (named by {recipe.path})")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses for bad files
        raise DataError(f"{tokenizer_path}: not a tokenizers tokenizer.json ({exc})") from None
    if text.truncation:
        tokenizer.enable_truncation(max_length=text.max_length)
    tokenizer.enable_padding(length=text.max_length)
    texts = _read_texts(recipe.source, text)
    if not texts:
        raise DataError(f"{recipe.source}: holds no text samples")
    encodings = tokenizer.encode_batch(texts)
    names = {s.name for s in specs}
    arrays: dict[str, RowArray] = {}
    for input_name, attribute in text.inputs.items():
        if input_name not in names:
            continue  # e.g. a model without token_type_ids
        try:
            rows = [getattr(e, attribute) for e in encodings]
        except AttributeError:
            raise ConfigError(f"{recipe.path}: [text.inputs] {input_name} = {attribute!r} is not a tokenizer encoding field") from None
        lengths = {len(r) for r in rows}
        if lengths != {text.max_length}:
            raise DataError(f"{recipe.source}: a sample is longer than max_length {text.max_length}; set truncation = true")
        arrays[input_name] = MemoryArray(np.asarray(rows, dtype=np.dtype(text.dtype)), f"{recipe.source}:{input_name}")
    return arrays


def recipe_arrays(path: str | Path, specs: list[InputSpec]) -> tuple[dict[str, RowArray], str]:
    """The arrays a recipe describes, keyed by model input name."""
    recipe = read_recipe(path)
    if recipe.kind == "text":
        assert recipe.text is not None
        return _text_arrays(recipe, recipe.text, specs), str(recipe.path)
    assert recipe.image is not None
    name = recipe.image.input
    if name is None:
        floats = [s for s in specs if not s.optional and s.dtype.kind == "f" and len(s.shape) in (3, 4)]
        if len(floats) != 1:
            raise ConfigError(
                f"{recipe.path}: the model has {len(floats)} image-like inputs; set [image] input = \"<name>\""
            )
        name = floats[0].name
    return {name: _image_rows(recipe, recipe.image)}, str(recipe.path)
