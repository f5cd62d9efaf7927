"""Decoder bundles for the export and generation tests: the synthetic decoders of
``decoder_graphs`` / ``kv_graphs`` saved, quantized and exported, with a word-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from edgeq.cli import main
from edgeq.export import export_bundle


def word_tokenizer(path: Path, vocab: int) -> Path:
    """A tokenizers tokenizer.json: words ``t0`` .. ``t{vocab-1}``, split on spaces, joined by spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.save(str(path))
    return path


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / name))
    return folder / name


def quantize_int4(model_path: Path, out: Path, block: int = 16) -> Path:
    assert main(["quantize", str(model_path), "--weights", "int4", "--block-size", str(block), "-o", str(out),
                 "--quiet"]) == 0
    return out


def bundle(model_path: Path, out: Path, target: str = "x86-cpu", **options: object) -> Path:
    export_bundle(model_path, target, output=out, progress=False, **options)  # type: ignore[arg-type]
    return out


def genai_config(folder: Path, **model: object) -> Path:
    path = folder / "genai_config.json"
    path.write_text(json.dumps({"model": model}))
    return path


def reference_greedy(model_path: Path, prompt: list[int], tokens: int) -> list[int]:
    """The toolkit's own greedy decode (``edgeq.evaluate.kv_cache``, onnxruntime without the runtime)."""
    from edgeq.evaluate.kv_cache import KVSession, kv_layout
    from edgeq.graph.io import load_model

    model = load_model(model_path)
    layout = kv_layout(model)
    assert layout is not None
    session = KVSession(model, layout, "reference")
    return [int(t) for t in session.generate(np.asarray([prompt], np.int64), tokens, chunk=len(prompt))[0]]
