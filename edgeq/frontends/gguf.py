"""A Llama-architecture GGUF file read into a float torch causal LM and a ``tokenizers`` tokenizer.

GGUF is how llama.cpp ships quantized decoders; many small models exist only in that form. The
reader takes the config from the metadata (``llama.*`` keys), dequantizes every tensor to
float32 with ``gguf.quants.dequantize`` and undoes the one layout change llama.cpp's converter
makes: it permutes the rows of the Q and K projections so that its RoPE can rotate interleaved
pairs of head dimensions, where transformers (and ``edgeq.frontends.llama``) rotate the two
halves of each head. ``unpermute_qk`` inverts that, so the module computes what the HF
checkpoint computes.

The tokenizer comes from the same metadata: for ``tokenizer.ggml.model == "gpt2"`` (byte-level
BPE, SmolLM2, GPT-2, Qwen) the token list and merges become a ``tokenizers.Tokenizer`` with
byte-level pre-tokenization; control tokens (type 3) become special tokens. The ``smollm`` and
``starcoder`` pre-tokenizers split digits one by one first, as llama.cpp does.

``gguf``, ``torch`` and ``tokenizers`` are imported inside the functions (``pip install
'edgeq[decoders]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import ConfigError, MissingDependencyError, UnsupportedError
from edgeq.frontends.llama import LlamaConfig

#: GGUF tensor names (per block ``blk.N.``) → transformers parameter names.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
#: llama.cpp pre-tokenizers that isolate every digit before the GPT-2 split.
_DIGIT_SPLITTING = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_CONTROL_TOKEN = 3


@dataclass(frozen=True)
class GGUFTokenizerInfo:
    """The special token ids a generation loop needs, from the GGUF metadata."""

    bos_token_id: int | None
    eos_token_id: int | None


def _reader(path: str | Path) -> Any:
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("gguf", "decoders", "reading GGUF files") from None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: GGUF file not found")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable GGUF file ({exc})") from None


def _field(reader: Any, key: str, default: Any = ...) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ConfigError(f"{reader.data.filename}: GGUF metadata has no {key!r}")
        return default
    return field.contents()


def read_config(path: str | Path, reader: Any = None) -> LlamaConfig:
    """The decoder's config from the ``llama.*`` metadata; other architectures are refused."""
    reader = reader if reader is not None else _reader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedError(f"{path}: GGUF architecture {arch!r}; only 'llama' is read")
    heads = int(_field(reader, "llama.attention.head_count"))
    vocab = _field(reader, "llama.vocab_size", None)
    if vocab is None:
        vocab = len(_field(reader, "tokenizer.ggml.tokens"))
    names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=int(_field(reader, "llama.embedding_length")),
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        num_layers=int(_field(reader, "llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        context_length=int(_field(reader, "llama.context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
    )


def unpermute_qk(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute``: rows of each head go from interleaved pairs back to two halves.

    The converter maps HF row ``(head, half, i)`` to GGUF row ``(head, i, half)``.
    """
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def dequantized_tensors(path: str | Path, reader: Any = None) -> dict[str, np.ndarray]:
    """Every tensor of the file as float32, in numpy's (rows, columns) order, under its GGUF name."""
    from gguf.quants import dequantize

    reader = reader if reader is not None else _reader(path)
    out = {}
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise UnsupportedError(
                f"{path}: tensor {tensor.name} is {tensor.tensor_type.name}, which gguf cannot dequantize"
            ) from None
        # A copy: float32 tensors come back as read-only views of the memory-mapped file.
        out[tensor.name] = np.array(values, dtype=np.float32).reshape(shape)
    return out


def hf_state_dict(tensors: dict[str, np.ndarray], config: LlamaConfig) -> dict[str, np.ndarray]:
    """GGUF tensors renamed to transformers' names, Q/K rows unpermuted, tied head filled in."""
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        stem, _, kind = name.rpartition(".")
        parts = stem.split(".")
        if parts[0] == "blk" and len(parts) == 3 and parts[2] in _BLOCK_NAMES:
            role = parts[2]
            if role == "attn_q":
                value = unpermute_qk(value, config.num_heads)
            elif role == "attn_k":
                value = unpermute_qk(value, config.num_kv_heads)
            out[f"model.layers.{parts[1]}.{_BLOCK_NAMES[role]}.{kind}"] = value
        elif stem in _TOP_NAMES:
            out[f"{_TOP_NAMES[stem]}.{kind}"] = value
        elif stem.startswith("rope_freqs"):
            raise UnsupportedError(f"tensor {name}: scaled RoPE (rope_freqs) is not supported")
        else:
            raise UnsupportedError(f"tensor {name}: not a Llama tensor this reader knows")
    if config.tie_word_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def load_gguf_causal_lm(path: str | Path) -> Any:
    """The GGUF decoder as a float32 ``edgeq.frontends.llama`` module (eval mode, KV-cache forward)."""
    import torch

    from edgeq.frontends.llama import llama_module

    reader = _reader(path)
    config = read_config(path, reader)
    state = hf_state_dict(dequantized_tensors(path, reader), config)
    tensors = {name: torch.from_numpy(value) for name, value in state.items()}
    return llama_module(config, tensors)


def gguf_tokenizer(path: str | Path, reader: Any = None) -> tuple[Any, GGUFTokenizerInfo]:
    """The GGUF's byte-level BPE tokenizer as a ``tokenizers.Tokenizer`` and its bos/eos ids."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise MissingDependencyError("tokenizers", "decoders", "the GGUF tokenizer") from None
    reader = reader if reader is not None else _reader(path)
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedError(f"{path}: tokenizer model {kind!r}; only byte-level BPE ('gpt2') is read")
    tokens = [str(t) for t in _field(reader, "tokenizer.ggml.tokens")]
    merges = [(left, right) for left, _, right in (str(m).partition(" ") for m in _field(reader, "tokenizer.ggml.merges"))]
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _field(reader, "tokenizer.ggml.pre", "default") in _DIGIT_SPLITTING:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, t in enumerate(types) if int(t) == _CONTROL_TOKEN]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    bos, eos = _field(reader, "tokenizer.ggml.bos_token_id", None), _field(reader, "tokenizer.ggml.eos_token_id", None)
    return tokenizer, GGUFTokenizerInfo(
        bos_token_id=None if bos is None else int(bos), eos_token_id=None if eos is None else int(eos)
    )
