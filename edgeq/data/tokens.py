"""Held-out text for language models, as token sequences.

Two file forms, both ending in a ``[sequences, tokens]`` int64 array of unpadded rows:

- a token file ``.npz`` holding ``input_ids`` [N, T] (integers: N sequences of T token ids), or
  ``tokens`` [L] (one long token stream, e.g. a whole tokenized document), cut into
  consecutive windows of ``seq_len`` tokens (a tail shorter than a window is dropped, unless
  the stream is shorter than one window: then it is the only sequence). When both keys are
  present ``input_ids`` is used.
- a plain UTF-8 ``.txt`` file with a ``tokenizer.json`` (Hugging Face ``tokenizers`` format),
  tokenized into one stream and windowed the same way. Text without a tokenizer is an error:
  guessing one would measure a different model.

Write a token file with ``numpy.savez("heldout.npz", input_ids=ids.astype("int64"))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import DataError, MissingDependencyError

TOKEN_KEYS = ("input_ids", "tokens")


@dataclass(frozen=True)
class TokenData:
    """``sequences`` [N, T] int64 token ids, and where they came from (for the report)."""

    sequences: np.ndarray
    origin: str


def windows(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """Consecutive ``seq_len``-token windows of a 1-D stream, [N, seq_len]."""
    count = stream.size // seq_len
    if count == 0:
        return stream[None, :]
    return stream[: count * seq_len].reshape(count, seq_len)


def _checked(ids: np.ndarray, where: str) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise DataError(f"{where}: token ids must be integers, found {ids.dtype}")
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] < 2:
        raise DataError(f"{where}: need [sequences, tokens] with at least 2 tokens per sequence, found shape {list(ids.shape)}")
    if ids.size and int(ids.min()) < 0:
        raise DataError(f"{where}: token ids must be non-negative, found {int(ids.min())}")
    return ids.astype(np.int64, copy=False)


def _from_arrays(arrays: Mapping[str, np.ndarray], seq_len: int, where: str) -> np.ndarray:
    if "input_ids" in arrays:
        return _checked(np.asarray(arrays["input_ids"]), f"{where}: input_ids")
    if "tokens" in arrays:
        stream = np.asarray(arrays["tokens"])
        if stream.ndim != 1:
            raise DataError(f"{where}: tokens must be a 1-D token stream, found shape {list(stream.shape)}")
        return _checked(windows(stream, seq_len), f"{where}: tokens")
    keys = ", ".join(sorted(arrays)) or "none"
    raise DataError(f"{where}: a token file needs 'input_ids' [N, T] or 'tokens' [L]; found keys: {keys}")


def _tokenize(path: Path, tokenizer: str | Path) -> np.ndarray:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError("tokenizers", "examples", "reading text data") from None
    if not Path(tokenizer).is_file():
        raise DataError(f"{tokenizer}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(tokenizer))
    except Exception as exc:  # tokenizers raises a bare Exception subclass from Rust
        raise DataError(f"{tokenizer}: not a tokenizer.json the tokenizers package can read ({exc})") from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    return np.asarray(tok.encode(text).ids, np.int64)


def load_tokens(
    spec: str | Path | Mapping[str, np.ndarray] | np.ndarray,
    tokenizer: str | Path | None = None,
    seq_len: int = 512,
    samples: int | None = None,
) -> TokenData:
    """Token sequences from a token file, a ``.txt`` (with ``tokenizer``), arrays or an [N, T] array.

    ``samples`` keeps the first that many sequences.
    """
    if seq_len < 2:
        raise DataError(f"--seq-len must be at least 2 tokens, got {seq_len}")
    if isinstance(spec, np.ndarray):
        ids, origin = _checked(spec, "token data"), "tokens"
    elif isinstance(spec, Mapping):
        ids, origin = _from_arrays(spec, seq_len, "token data"), "tokens"
    else:
        path = Path(spec)
        origin = str(path)
        if not path.is_file():
            raise DataError(f"{path}: not found; language-model data is a token .npz (input_ids or tokens) or a .txt with --tokenizer")
        if path.suffix == ".txt":
            if tokenizer is None:
                raise DataError(f"{path}: text data needs its tokenizer: pass --tokenizer tokenizer.json (or give a token .npz)")
            ids = _checked(windows(_tokenize(path, tokenizer), seq_len), f"{path} tokenized")
        elif path.suffix == ".npz":
            if tokenizer is not None:
                raise DataError(f"{path}: a token file is already tokenized; --tokenizer is only for .txt data")
            try:
                with np.load(path, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files if k in TOKEN_KEYS}
                    present = list(npz.files)
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: not a readable .npz ({exc})") from None
            if not arrays:
                raise DataError(f"{path}: a token file needs 'input_ids' [N, T] or 'tokens' [L]; found keys: {', '.join(present) or 'none'}")
            ids = _from_arrays(arrays, seq_len, str(path))
        else:
            raise DataError(f"{path}: language-model data is a token .npz (input_ids or tokens) or a .txt with --tokenizer, not {path.suffix or 'this file'}")
    if samples is not None:
        ids = ids[:samples]
    return TokenData(ids, origin)


def tokenizer_beside(model_path: str | Path) -> Path | None:
    """The tokenizer a model folder carries: ``tokenizer.json`` (onnxruntime-genai's and Hugging
    Face's folders) or ``<model stem>.tokenizer.json`` beside the model file; None when neither is."""
    model = Path(model_path)
    for candidate in (model.parent / "tokenizer.json", model.parent / f"{model.stem}.tokenizer.json"):
        if candidate.is_file():
            return candidate
    return None


def text_tokenizer(data: str | Path | None, tokenizer: str | Path | None, model_path: str | Path) -> str | Path | None:
    """``tokenizer`` as given; for ``.txt`` data without one, the tokenizer beside the model (if any)."""
    if tokenizer is not None or data is None or Path(data).suffix != ".txt":
        return tokenizer
    return tokenizer_beside(model_path)
