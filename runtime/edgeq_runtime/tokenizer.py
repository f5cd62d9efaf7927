"""The bundle's tokenizer, through the ``tokenizers`` package when the board has it.

``tokenizers`` is optional on the board: without it (or without a tokenizer in the bundle) the
runtime takes and returns token ids, and a text prompt is refused naming what is missing. A
tokenizer whose ids reach past the model's vocabulary is refused: it belongs to another model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from edgeq_runtime.errors import BundleError


class TextCodec:
    """Text <-> ids with one ``tokenizers.Tokenizer``; ``stream`` gives text as tokens arrive."""

    def __init__(self, tokenizer: Any, path: Path) -> None:
        self._tokenizer = tokenizer
        self.path = path

    def encode(self, text: str) -> List[int]:
        return list(self._tokenizer.encode(text).ids)

    def decode(self, ids: List[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=False))

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))


class TextStream:
    """The new text each token adds: the decoded whole minus what was already given out, holding
    back an incomplete UTF-8 character (byte-level BPE splits characters across tokens)."""

    def __init__(self, codec: TextCodec) -> None:
        self._codec = codec
        self._ids: List[int] = []
        self._given = 0

    def push(self, token: int) -> str:
        self._ids.append(token)
        text = self._codec.decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self._given = text[self._given:], len(text)
        return piece


def load_codec(bundle: Path, name: Optional[str], vocab_size: int) -> Optional[TextCodec]:
    """The bundle's tokenizer, or None when it has none or ``tokenizers`` is not installed."""
    if name is None:
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path = bundle / name
    try:
        codec = TextCodec(Tokenizer.from_file(str(path)), path)
    except Exception as exc:  # tokenizers raises its own exception type for a bad file
        raise BundleError(str(path) + ": not a tokenizers tokenizer.json (" + " ".join(str(exc).split()) + ")") from None
    if codec.vocab_size > vocab_size:
        raise BundleError(str(path) + ": the tokenizer has " + str(codec.vocab_size) + " tokens but the model's "
                          "vocabulary is " + str(vocab_size) + "; it is not this model's tokenizer")
    return codec


def tokenizers_missing_reason() -> Optional[str]:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return "the tokenizers package is not installed (pip install tokenizers), so pass token ids"
    return None
