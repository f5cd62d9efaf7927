"""What a decoder bundle carries besides the model: tokenizer, generation settings, KV layout.

A generation loop on the board needs facts the graph does not hold: which ids begin and end a
text, the chat template, the tokenizer itself. They are read from the files the tools users
already have put beside the model: ``genai_config.json`` (onnxruntime-genai's builder),
``generation_config.json`` / ``config.json`` / ``tokenizer_config.json`` (a Hugging Face
folder), and a record ``<model stem>.json`` (edgeq's examples, e.g. ``smollm2.json``); the first
file that states a fact wins and ``sources`` names it. A fact nobody states stays null: the
runtime then stops on ``--max-new-tokens`` or the stop ids it is given, never on a guess.

The tokenizer is ``--tokenizer FILE``, else ``tokenizer.json`` or ``<stem>.tokenizer.json`` beside
the model. Its vocabulary must fit the model's logits: an id the LM head cannot produce or the
embedding cannot read is refused here, naming both numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from edgeq.errors import ConfigError
from edgeq.graph.decoder import DecoderInfo

TOKENIZER_NAME = "tokenizer.json"
_ID_FILES = ("genai_config.json", "generation_config.json", "config.json")
_NUMPY_KV = {"float": "float32", "float16": "float16", "int8": "int8"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def find_tokenizer(model_path: Path, given: Path | None) -> Path | None:
    """``--tokenizer``, else ``tokenizer.json`` / ``<stem>.tokenizer.json`` beside the model."""
    if given is not None:
        if not given.is_file():
            raise ConfigError(f"--tokenizer {given}: no such file (expected a tokenizers tokenizer.json)")
        return given
    folder = model_path if model_path.is_dir() else model_path.parent
    for name in (TOKENIZER_NAME, f"{model_path.stem}.tokenizer.json"):
        if (folder / name).is_file():
            return folder / name
    return None


def tokenizer_vocab(path: Path) -> tuple[int, dict[str, int]]:
    """(ids the tokenizer can emit: max id + 1, token text -> id) read from tokenizer.json itself."""
    data = _read_json(path)
    model = data.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict):
        raise ConfigError(f"{path}: no model.vocab table; expected a tokenizers tokenizer.json (BPE / WordPiece)")
    tokens = {str(k): int(v) for k, v in vocab.items()}
    for added in data.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("id"), int):
            tokens[str(added.get("content"))] = int(added["id"])
    return (max(tokens.values()) + 1 if tokens else 0), tokens


def _token_id(value: Any, tokens: dict[str, int]) -> int | None:
    text = value.get("content") if isinstance(value, dict) else value
    return tokens.get(text) if isinstance(text, str) else None


def _ids(value: Any) -> list[int] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def generation_settings(model_path: Path, tokens: dict[str, int]) -> dict[str, Any]:
    """BOS / EOS / pad ids and the chat template from the files beside the model (see the module)."""
    folder = model_path if model_path.is_dir() else model_path.parent
    found: dict[str, Any] = {"bos_token_id": None, "eos_token_ids": [], "pad_token_id": None, "chat_template": None}
    sources: dict[str, str] = {}

    def offer(key: str, value: Any, source: str) -> None:
        if value is not None and value != [] and key not in sources:
            found[key], sources[key] = value, source

    for name in (*_ID_FILES, f"{model_path.stem}.json"):
        path = folder / name
        if not path.is_file() or path == model_path:
            continue
        data = _read_json(path)
        data = {**data, **data["model"]} if name == "genai_config.json" and isinstance(data.get("model"), dict) else data
        for key in ("bos_token_id", "pad_token_id"):
            ids = _ids(data.get(key))
            offer(key, ids[0] if ids else None, name)
        offer("eos_token_ids", _ids(data.get("eos_token_id")), name)
    config = folder / "tokenizer_config.json"
    if config.is_file():
        data = _read_json(config)
        template = data.get("chat_template")
        offer("chat_template", template if isinstance(template, str) else None, "tokenizer_config.json")
        bos, eos = _token_id(data.get("bos_token"), tokens), _token_id(data.get("eos_token"), tokens)
        offer("bos_token_id", bos, "tokenizer_config.json bos_token")
        offer("eos_token_ids", [eos] if eos is not None else None, "tokenizer_config.json eos_token")
    return {**found, "sources": sources}


def _shared_buffer(model: onnx.ModelProto, layers: int) -> bool:
    """Every layer's attention is a GroupQueryAttention reading past straight from the graph inputs:
    onnxruntime then writes present into the past buffer itself (one max-length buffer per tensor)."""
    shared = {n.input[3] for n in model.graph.node
              if n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft" and len(n.input) > 4}
    return all(f"past_key_values.{i}.key" in shared for i in range(layers))


def decoder_section(
    model: onnx.ModelProto, model_path: Path, info: DecoderInfo, context_length: int, tokenizer: Path | None,
) -> dict[str, Any]:
    """The manifest's ``decoder`` block as a dict (``edgeq_runtime.decoder_spec`` validates it)."""
    inputs = {v.name for v in model.graph.input}
    missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    if missing or "logits" not in {o.name for o in model.graph.output}:
        what = ", ".join(missing) if missing else "a logits output"
        raise ConfigError(f"{model_path}: a KV-cache decoder without {what}; a generation loop cannot drive it")
    unknown = [k for k in ("kv_heads", "head_size", "vocab_size", "kv_bytes_per_token") if getattr(info, k) is None]
    if unknown or info.kv_dtype not in _NUMPY_KV:
        what = ", ".join(unknown) if unknown else f"KV dtype {info.kv_dtype}"
        raise ConfigError(f"{model_path}: the decoder's {what} cannot be read from the graph or genai_config.json")
    assert info.vocab_size is not None and info.kv_heads is not None and info.head_size is not None
    tokens: dict[str, int] = {}
    if tokenizer is not None:
        size, tokens = tokenizer_vocab(tokenizer)
        if size > info.vocab_size:
            raise ConfigError(f"{tokenizer}: the tokenizer has ids up to {size - 1} but the model's vocabulary is "
                              f"{info.vocab_size}; it is not this model's tokenizer")
    return {
        "vocab_size": info.vocab_size, "context_length": context_length,
        "kv": {"layers": info.layers, "kv_heads": info.kv_heads, "head_size": info.head_size,
               "dtype": _NUMPY_KV[info.kv_dtype], "bytes_per_token": info.kv_bytes_per_token,
               "position_ids": info.position_ids, "shared_buffer": _shared_buffer(model, info.layers)},
        "tokenizer": TOKENIZER_NAME if tokenizer is not None else None,
        "generation": generation_settings(model_path, tokens),
    }
