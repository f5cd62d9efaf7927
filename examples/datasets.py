"""Real calibration and evaluation data for the example models, built offline and deterministically.

Images are random-resized crops of photos that ship inside scikit-image and scikit-learn; text is
English sentences from CPython's own documentation (``pydoc_data.topics``). Both are real data
with real statistics, which synthetic noise is not: activation ranges, outliers and attention
patterns only look like deployment when the input does.

Each set is an ``.npz`` keyed by model input name, axis 0 = sample, written uncompressed with
``np.savez`` so a loader can stream one member row by row. Calibration and evaluation splits are
disjoint: a quantizer tuned on its calibration set is then judged on inputs it never saw.

* Images: evaluation draws half of its samples from photos that calibration never sees
  (``EVAL_ONLY_PHOTOS``) and half from the calibration photos, cropped with a different seed.
  A JSON sidecar beside each file records every sample's photo, crop box and flip.
* Text: the sentence pool is deduplicated (case-insensitively, as the tokenizer lower-cases),
  shuffled with a fixed seed, and split without overlap.

The sentence pool depends on the running CPython's documentation; for one interpreter version
the output is byte-for-byte reproducible.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from examples import models

IMAGES_CALIB_FILE = "images_calib.npz"
IMAGES_EVAL_FILE = "images_eval.npz"
TEXT_CALIB_FILE = "text_calib.npz"
TEXT_EVAL_FILE = "text_eval.npz"

CALIB_SEED = 20240601
EVAL_SEED = 20240602
TEXT_SEED = 20240603

# Photos only the calibration set sees, and photos held out for evaluation (colour unless noted;
# grey photos are replicated to three channels, as a user's greyscale camera would be).
CALIB_PHOTOS = (
    "skimage:chelsea",
    "skimage:astronaut",
    "skimage:rocket",
    "skimage:hubble_deep_field",
    "skimage:immunohistochemistry",
    "sklearn:china",
    "skimage:camera",  # grey
    "skimage:coins",  # grey
    "skimage:brick",  # grey texture
    "skimage:grass",  # grey texture
)
EVAL_ONLY_PHOTOS = (
    "skimage:coffee",
    "sklearn:flower",
    "skimage:stereo_motorcycle",  # left view
    "skimage:clock",  # grey
    "skimage:gravel",  # grey texture
)

# Random-resized-crop: fraction of the photo's area and aspect ratio range, as in ImageNet training.
CROP_AREA = (0.20, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
# Photos are first shrunk so their shorter side is at most this: a 224 crop then never comes from
# a tiny corner of a huge image, and resizing stays cheap.
MAX_SHORTER_SIDE = 320

MIN_WORDS, MAX_WORDS = 6, 80


# --- images -----------------------------------------------------------------------------------


def load_photo(source: str) -> np.ndarray:
    """uint8 HxWx3 for ``"skimage:<name>"`` or ``"sklearn:<name>"``; all bundled with the packages."""
    library, _, name = source.partition(":")
    if library == "skimage":
        from skimage import data

        image = getattr(data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
    elif library == "sklearn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    else:
        raise ValueError(f"unknown photo source {source!r}")
    return models.as_rgb(image)


def _shrunk(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = MAX_SHORTER_SIDE / min(h, w)
    if scale >= 1:
        return image
    resized = models.resize(image, round(h * scale), round(w * scale))
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class CropRecord:
    """Where one sample came from, so disjointness and provenance can be checked after the fact."""

    photo: str
    top: int
    left: int
    height: int
    width: int
    flipped: bool


def random_resized_crop(image: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop with random area fraction and aspect ratio."""
    h, w = image.shape[:2]
    area = h * w
    for _ in range(20):
        target = area * rng.uniform(*CROP_AREA)
        aspect = float(np.exp(rng.uniform(np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1]))))
        cw = round(np.sqrt(target * aspect))
        ch = round(np.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top, left, ch, cw
    side = min(h, w)  # fallback: the centred square
    return (h - side) // 2, (w - side) // 2, side, side


def _crop_samples(
    photos: dict[str, np.ndarray], plan: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, list[CropRecord]]:
    out = np.empty((len(plan), 3, models.IMAGE_SIZE, models.IMAGE_SIZE), dtype=np.float32)
    records = []
    for i, name in enumerate(plan):
        image = photos[name]
        top, left, ch, cw = random_resized_crop(image, rng)
        flipped = bool(rng.random() < 0.5)
        crop = image[top : top + ch, left : left + cw]
        if flipped:
            crop = crop[:, ::-1]
        out[i] = models.normalize(
            models.resize(np.ascontiguousarray(crop), models.IMAGE_SIZE, models.IMAGE_SIZE)
        )
        records.append(CropRecord(name, top, left, ch, cw, flipped))
    return out, records


def _round_robin(pool: tuple[str, ...], count: int, rng: np.random.Generator) -> list[str]:
    """Each photo used equally often (±1), in a shuffled order."""
    plan = [pool[i % len(pool)] for i in range(count)]
    return [plan[i] for i in rng.permutation(count)]


def build_image_sets(cache: Path, n_calib: int = 1024, n_eval: int = 500) -> tuple[Path, Path]:
    """``images_calib.npz`` / ``images_eval.npz``: key "input", float32 [N,3,224,224], preprocessed
    exactly as EfficientNet-Lite0 expects (see ``examples.models`` constants)."""
    cache = Path(cache)
    calib_path, eval_path = cache / IMAGES_CALIB_FILE, cache / IMAGES_EVAL_FILE
    sources = [Path(__file__), Path(models.__file__)]
    if _cached(calib_path, "input", n_calib, sources) and _cached(eval_path, "input", n_eval, sources):
        return calib_path, eval_path
    photos = {name: _shrunk(load_photo(name)) for name in (*CALIB_PHOTOS, *EVAL_ONLY_PHOTOS)}

    calib_rng = np.random.default_rng(CALIB_SEED)
    calib, calib_records = _crop_samples(photos, _round_robin(CALIB_PHOTOS, n_calib, calib_rng), calib_rng)
    _save_npz(calib_path, {"input": calib}, [asdict(r) for r in calib_records])
    del calib

    eval_rng = np.random.default_rng(EVAL_SEED)
    held_out = _round_robin(EVAL_ONLY_PHOTOS, (n_eval + 1) // 2, eval_rng)
    seen = _round_robin(CALIB_PHOTOS, n_eval // 2, eval_rng)
    plan = [name for pair in zip(held_out, seen, strict=False) for name in pair]
    plan += held_out[len(seen) :]
    evaluation, eval_records = _crop_samples(photos, plan, eval_rng)
    _save_npz(eval_path, {"input": evaluation}, [asdict(r) for r in eval_records])
    return calib_path, eval_path


# --- text -------------------------------------------------------------------------------------

_BULLET = re.compile(r"^(?:[*\-•]|\d+\.)\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])|(?<=[.!?]\))\s+(?=[A-Z(])")
_EMPHASIS = re.compile(r"\*{1,2}([^*\s][^*]*?)\*{1,2}")
# Markup, code and maths that a sentence of English prose does not contain.
_CODEISH = re.compile(r"[{}\[\]=<>|\\`$#@~^_*]|::|\(\)|\.\.\.|\w\.\w|https?:")
_ABBREVIATION_END = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf)\.$")


def _prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text; indented blocks (grammar, code, examples) are dropped."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        first = lines[0]
        indent = len(first) - len(first.lstrip(" "))
        stripped = first.strip()
        if not stripped:
            continue
        is_bullet = bool(_BULLET.match(stripped)) and indent <= 4
        if indent > 0 and not is_bullet:
            continue
        if any(set(line.strip()) <= set("*=-~^\"'") for line in lines):  # heading underline
            continue
        joined = " ".join(line.strip() for line in lines)
        paragraphs.append(_BULLET.sub("", joined) if is_bullet else joined)
    return paragraphs


def _is_sentence(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not sentence[0].isupper() or sentence[-1] not in ".!?" or _ABBREVIATION_END.search(sentence):
        return False
    if _CODEISH.search(sentence):
        return False
    letters = sum(c.isalpha() for c in sentence)
    return letters >= 0.75 * sum(not c.isspace() for c in sentence)


def documentation_sentences() -> list[str]:
    """English sentences from CPython's documentation topics, deduplicated and sorted."""
    from pydoc_data.topics import topics

    unique: dict[str, str] = {}
    for key in sorted(topics):
        for paragraph in _prose_paragraphs(topics[key]):
            paragraph = _EMPHASIS.sub(r"\1", " ".join(paragraph.split()))
            for sentence in _SENTENCE_END.split(paragraph):
                sentence = sentence.strip()
                if _is_sentence(sentence):
                    unique.setdefault(sentence.casefold(), sentence)
    return sorted(unique.values())


def build_text_sets(cache: Path, n_calib: int = 512, n_eval: int = 256) -> tuple[Path, Path]:
    """``text_calib.npz`` / ``text_eval.npz``: input_ids, attention_mask, token_type_ids,
    int64 [N,128], from disjoint sentence sets."""
    cache = Path(cache)
    calib_path, eval_path = cache / TEXT_CALIB_FILE, cache / TEXT_EVAL_FILE
    sources = [Path(__file__), Path(models.__file__), models.minilm_dir() / "tokenizer.json"]
    if _cached(calib_path, "input_ids", n_calib, sources) and _cached(
        eval_path, "input_ids", n_eval, sources
    ):
        return calib_path, eval_path
    sentences = documentation_sentences()
    if n_calib + n_eval > len(sentences):
        raise ValueError(f"asked for {n_calib}+{n_eval} sentences, the documentation yields {len(sentences)}")
    order = np.random.default_rng(TEXT_SEED).permutation(len(sentences))
    chosen = [sentences[i] for i in order[: n_calib + n_eval]]
    for path, part in ((calib_path, chosen[:n_calib]), (eval_path, chosen[n_calib:])):
        _save_npz(path, models.tokenize(part), [{"sentence": s} for s in part])
    return calib_path, eval_path


# --- files ------------------------------------------------------------------------------------


def sidecar_path(npz_path: Path) -> Path:
    """JSON listing where each sample came from (photo and crop, or sentence)."""
    return Path(npz_path).with_suffix(".json")


def _save_npz(path: Path, arrays: dict[str, np.ndarray], records: list[dict[str, object]]) -> None:
    from edgeq.fileio import atomic_path, atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sidecar_path(path), json.dumps({"samples": records}, indent=1) + "\n").chmod(0o644)
    savez: Callable[..., None] = np.savez  # uncompressed: members can be streamed row by row
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            savez(handle, **arrays)
        tmp.chmod(0o644)  # a cache other users and CI read, not a secret (mkstemp makes it 0600)


def npz_member_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """Shape of one member read from its .npy header, without loading the data."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            reader: Callable[..., tuple[tuple[int, ...], bool, np.dtype]] = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = reader(member)
            return tuple(shape)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _cached(path: Path, key: str, rows: int, sources: list[Path]) -> bool:
    if not models.is_fresh(path, sources) or not sidecar_path(path).is_file():
        return False
    shape = npz_member_shape(path, key)
    return shape is not None and shape[0] == rows
