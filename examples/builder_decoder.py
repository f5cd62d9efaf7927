"""A KV-cache decoder written by another tool: onnxruntime-genai's model builder, offline.

edgeq must take the graphs users already have. The builder writes what onnxruntime-genai runs:
``GroupQueryAttention`` with rotary embedding inside, ``SkipSimplifiedLayerNormalization``,
``SimplifiedLayerNormalization`` in the *default* domain at opset 22 (onnx has no schema for it),
a fused QKV MatMul, and ``genai_config.json`` beside the model. The model here is a tiny random
Llama (2 layers, hidden 64, 4 query / 2 KV heads, vocabulary 256) saved with transformers into a
folder with a byte-level BPE tokenizer (the builder reads one), so nothing comes from a hub.

Needs ``transformers`` and ``onnxruntime-genai`` (the ``decoders`` extra).
``python examples/builder_decoder.py --cache DIR`` builds it and prints where.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# The tiny Llama: GQA (4 query heads share 2 KV heads), untied embedding, context 128.
TINY_LLAMA = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
FOLDER = "builder_decoder"


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A random LlamaForCausalLM and a 256-token BPE tokenizer in a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval().save_pretrained(folder)
    vocab = {f"<{i}>": i for i in range(TINY_LLAMA["vocab_size"])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<0>"))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<1>", eos_token="<2>",
                            unk_token="<0>").save_pretrained(folder)
    return folder


def build_builder_decoder(cache: Path) -> Path:
    """cache/builder_decoder/model.onnx (+ model.onnx.data, genai_config.json), fp32 for the CPU.

    The Hugging Face folder stays in cache/builder_decoder/hf for a torch reference.
    """
    out_dir = Path(cache) / FOLDER
    model = out_dir / "model.onnx"
    config = out_dir / "genai_config.json"
    if model.is_file() and config.is_file() and model.stat().st_mtime > Path(__file__).stat().st_mtime:
        return model
    hf = save_tiny_llama(out_dir / "hf")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out_dir),
               "-p", "fp32", "-e", "cpu", "-c", str(out_dir / "builder_cache")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(out_dir / "builder_cache", ignore_errors=True)
    if done.returncode != 0 or not model.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"onnxruntime-genai's builder failed (exit {done.returncode}):\n{tail}")
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/examples"))
    args = parser.parse_args(argv)
    print(build_builder_decoder(args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
