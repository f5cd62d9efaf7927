"""The ``decoder`` section of a bundle manifest (schema version 2): what a generation loop needs.

A KV-cache decoder is not run once per input like a classifier: the runtime carries a cache from
step to step, feeds positions and a growing mask, and stops at an end token. So the bundle says,
in a validated block the toolkit fills at export::

    "decoder": {
      "vocab_size": 49152, "context_length": 8192,
      "kv": {"layers": 30, "kv_heads": 3, "head_size": 64, "dtype": "float32",
             "bytes_per_token": 46080, "position_ids": true, "shared_buffer": false},
      "tokenizer": "tokenizer.json",
      "generation": {"bos_token_id": 1, "eos_token_ids": [2], "pad_token_id": null,
                     "chat_template": null, "sources": {"eos_token_ids": "genai_config.json"}}
    }

``shared_buffer`` is true where the graph's attention op reads past and writes present in one
preallocated max-length buffer (onnxruntime's ``GroupQueryAttention``); otherwise present is a
new tensor each step (past concatenated with the new keys). ``tokenizer`` is a file of the bundle
(checksummed like the model) or null: the runtime then takes and returns token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

from edgeq_runtime.errors import BundleError

KV_DTYPES = ("float32", "float16", "int8")


def _int(data: Dict[str, Any], key: str, source: str, where: str, required: bool = True,
         minimum: int = 1) -> Optional[int]:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BundleError(source + ": " + where + "." + key + " must be an integer >= " + str(minimum)
                          + ", got " + repr(value))
    return value


def _known(data: Dict[str, Any], keys: Sequence[str], source: str, where: str) -> None:
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise BundleError(source + ": " + where + " has unknown keys " + ", ".join(unknown)
                          + " (written by a newer edgeq?)")


@dataclass
class KVSpec:
    """The cache's shape per layer: [batch, kv_heads, tokens, head_size] for key and value."""

    layers: int
    kv_heads: int
    head_size: int
    dtype: str
    bytes_per_token: int
    position_ids: bool
    shared_buffer: bool = False

    KEYS: ClassVar[Tuple[str, ...]] = ("layers", "kv_heads", "head_size", "dtype", "bytes_per_token", "position_ids",
                                       "shared_buffer")

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> KVSpec:
        where = "decoder.kv"
        if not isinstance(data, dict):
            raise BundleError(source + ": " + where + " must be an object")
        _known(data, cls.KEYS, source, where)
        dtype = data.get("dtype")
        if dtype not in KV_DTYPES:
            raise BundleError(source + ": " + where + ".dtype " + repr(dtype) + " is not one of " + ", ".join(KV_DTYPES))
        flags = {}
        for key in ("position_ids", "shared_buffer"):
            flags[key] = data.get(key, False)
            if not isinstance(flags[key], bool):
                raise BundleError(source + ": " + where + "." + key + " must be true or false, got " + repr(flags[key]))
        return cls(
            layers=int(_int(data, "layers", source, where) or 0), kv_heads=int(_int(data, "kv_heads", source, where) or 0),
            head_size=int(_int(data, "head_size", source, where) or 0), dtype=str(dtype),
            bytes_per_token=int(_int(data, "bytes_per_token", source, where) or 0),
            position_ids=flags["position_ids"], shared_buffer=flags["shared_buffer"],
        )

    def past_names(self) -> List[str]:
        return ["past_key_values." + str(n) + "." + kind for n in range(self.layers) for kind in ("key", "value")]

    def present_names(self) -> List[str]:
        return ["present." + str(n) + "." + kind for n in range(self.layers) for kind in ("key", "value")]


@dataclass
class GenerationSpec:
    """Special tokens and the chat template, each with where it was read (``sources``)."""

    bos_token_id: Optional[int] = None
    eos_token_ids: List[int] = field(default_factory=list)
    pad_token_id: Optional[int] = None
    chat_template: Optional[str] = None
    sources: Dict[str, str] = field(default_factory=dict)

    KEYS: ClassVar[Tuple[str, ...]] = ("bos_token_id", "eos_token_ids", "pad_token_id", "chat_template", "sources")

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> GenerationSpec:
        where = "decoder.generation"
        if not isinstance(data, dict):
            raise BundleError(source + ": " + where + " must be an object")
        _known(data, cls.KEYS, source, where)
        eos = data.get("eos_token_ids", [])
        if not isinstance(eos, list) or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in eos):
            raise BundleError(source + ": " + where + ".eos_token_ids must be a list of token ids, got " + repr(eos))
        template = data.get("chat_template")
        if template is not None and not isinstance(template, str):
            raise BundleError(source + ": " + where + ".chat_template must be a string or null")
        sources = data.get("sources", {})
        if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
            raise BundleError(source + ": " + where + ".sources must map names to strings")
        return cls(
            bos_token_id=_int(data, "bos_token_id", source, where, required=False, minimum=0),
            eos_token_ids=list(eos), pad_token_id=_int(data, "pad_token_id", source, where, required=False, minimum=0),
            chat_template=template, sources=dict(sources),
        )


@dataclass
class DecoderSpec:
    """The manifest's ``decoder`` block (see the module docstring)."""

    vocab_size: int
    context_length: int
    kv: KVSpec
    tokenizer: Optional[str] = None
    generation: GenerationSpec = field(default_factory=GenerationSpec)

    KEYS: ClassVar[Tuple[str, ...]] = ("vocab_size", "context_length", "kv", "tokenizer", "generation")

    def to_dict(self) -> Dict[str, Any]:
        return {"vocab_size": self.vocab_size, "context_length": self.context_length, "kv": self.kv.to_dict(),
                "tokenizer": self.tokenizer, "generation": self.generation.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DecoderSpec:
        if not isinstance(data, dict):
            raise BundleError(source + ": 'decoder' must be an object or null")
        _known(data, cls.KEYS, source, "decoder")
        tokenizer = data.get("tokenizer")
        if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer):
            raise BundleError(source + ": decoder.tokenizer must be a file name or null, got " + repr(tokenizer))
        spec = cls(
            vocab_size=int(_int(data, "vocab_size", source, "decoder") or 0),
            context_length=int(_int(data, "context_length", source, "decoder") or 0),
            kv=KVSpec.from_dict(data.get("kv"), source), tokenizer=tokenizer,
            generation=GenerationSpec.from_dict(data.get("generation", {}), source),
        )
        for token in spec.generation.eos_token_ids + [t for t in (spec.generation.bos_token_id,
                                                                  spec.generation.pad_token_id) if t is not None]:
            if token >= spec.vocab_size:
                raise BundleError(source + ": decoder.generation token id " + str(token) + " is outside the vocabulary ("
                                  + str(spec.vocab_size) + " tokens)")
        return spec
