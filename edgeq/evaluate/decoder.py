"""Language models (KV-cache decoders) against their float reference.

A decoder's quality is not one forward pass: it is how well it predicts text and what it says
when left to talk. So for each candidate this measures, on held-out token sequences
(``edgeq.data.tokens``):

- **perplexity** by teacher forcing: every sequence runs through the KV-cache graph in chunks of
  ``chunk`` tokens, each chunk's ``present`` cache fed back as the next one's ``past``, which is
  the same computation as one pass over the whole sequence (a test holds it to float rounding)
  while bounding memory by the chunk;
- **next-token top-1 agreement** with the reference at every position of the same run, and the
  mean KL divergence of the next-token distribution from the reference's;
- **greedy agreement**: each model continues the same ``prompts`` prompts (the first
  ``prompt_tokens`` of the first sequences) by ``new_tokens`` greedy tokens on its own; the share
  of generated tokens equal to the reference's at the same position, and the mean position of
  the first one that differs (``new_tokens`` when none does);
- per-layer SQNR of the quantized layers (as for any comparison) and file size.

onnxruntime runs unoptimized, as in ``edgeq.evaluate.compare``; latency is not measured here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeq import metrics
from edgeq.errors import ConfigError, DataError
from edgeq.evaluate.compare import (
    ENERGY_REASON,
    LayerErrors,
    VariantResult,
    file_bytes,
    quantized_layer_tensors,
    unique_names,
    with_variants,
)
from edgeq.evaluate.kv_cache import KVLayout, KVSession, kv_layout
from edgeq.serialization import Serializable


@dataclass(frozen=True)
class DecoderOptions:
    """How a decoder comparison reads its data and how much it generates.

    ``seq_len`` cuts a token stream (or tokenized ``.txt``, which needs ``tokenizer``) into
    sequences; ``batch_size`` prompts are generated together.
    """

    chunk: int = 256
    prompts: int = 8
    prompt_tokens: int = 32
    new_tokens: int = 32
    seq_len: int = 512
    batch_size: int = 8
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for name in ("chunk", "prompts", "prompt_tokens", "new_tokens", "seq_len", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


@dataclass
class DecoderCompareResult(Serializable):
    """``edgeq compare`` on language models. Variant ``metrics`` keys: ``perplexity``,
    ``perplexity_ratio`` (to the reference's), ``next_token_agreement``, ``kl_divergence``
    (nats per token), ``greedy_agreement``, ``greedy_first_divergence`` (mean token index)."""

    schema_type = "edgeq.DecoderCompareResult"
    schema_version = 1

    reference: str
    data: str
    sequences: int
    scored_tokens: int
    chunk: int
    prompts: int
    prompt_tokens: int
    new_tokens: int
    reference_file_bytes: int
    reference_perplexity: float
    task: str = "decoder"
    variants: list[VariantResult] = field(default_factory=list)
    # KV cache bytes one more token costs (None when the graph does not state it), the
    # reference's and each variant's by name: what --kv-cache int8 changes.
    reference_kv_bytes_per_token: int | None = None
    kv_bytes_per_token: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> DecoderCompareResult:
        return cls(**with_variants(data))

    def format_text(self, max_layers: int = 8) -> str:
        """The table ``edgeq compare`` prints for decoders."""
        lines = [
            f"reference: {self.reference} ({self.reference_file_bytes / 1e6:.2f} MB)  task: decoder  data: {self.data}",
            f"  {self.sequences} sequences, {self.scored_tokens} next-token predictions (chunks of {self.chunk}); "
            f"greedy: {self.prompts} prompts of {self.prompt_tokens} tokens + {self.new_tokens} new",
            f"reference perplexity {self.reference_perplexity:.4f}",
        ]

        def kv(value: int | None) -> str:
            return "?" if value is None else f"{value:,} B/token"

        for v in self.variants:
            m = v.metrics
            lines += [
                "",
                f"{v.name}: {v.path}",
                f"  size            {v.file_bytes / 1e6:.2f} MB ({v.size_ratio:.3f}x of reference)",
                f"  perplexity      {m['perplexity']:.4f} ({m['perplexity_ratio']:.4f}x of reference)",
                f"  next-token agr. {m['next_token_agreement']:.4f}",
                f"  KL divergence   {m['kl_divergence']:.5f} nats/token",
                f"  greedy agree    {m['greedy_agreement']:.4f} (first divergence at token {m['greedy_first_divergence']:.1f} of {self.new_tokens})",
            ]
            if self.reference_kv_bytes_per_token is not None or self.kv_bytes_per_token.get(v.name) is not None:
                lines.append(f"  KV cache        {kv(self.kv_bytes_per_token.get(v.name))} "
                             f"(reference {kv(self.reference_kv_bytes_per_token)})")
            if v.layers:
                lines.append(f"  worst layers (SQNR of {len(v.layers)} quantized layer outputs, worst first):")
                lines += [f"    {row['sqnr_db']:7.2f} dB  {row['tensor']} ({row['op_type']})" for row in v.layers[:max_layers]]
        return "\n".join(lines)


def _vocab(model: onnx.ModelProto) -> int | None:
    logits = next(o for o in model.graph.output if o.name == "logits")
    dims = logits.type.tensor_type.shape.dim
    return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None


def _candidate_layout(path: Path, model: onnx.ModelProto, reference: KVLayout) -> KVLayout:
    layout = kv_layout(model)
    if layout is None:
        raise DataError(f"{path}: not a KV-cache decoder like the reference (input_ids, past_key_values.N.*, logits, present.N.*)")
    if (layout.layers, layout.kv_heads, layout.head_size) != (reference.layers, reference.kv_heads, reference.head_size):
        raise DataError(
            f"{path}: its cache is {layout.layers} layers x {layout.kv_heads} heads x {layout.head_size}, the reference's "
            f"{reference.layers} x {reference.kv_heads} x {reference.head_size}; compare models of the same network"
        )
    return layout


def compare_decoders(
    ref_path: Path,
    ref_model: onnx.ModelProto,
    cand_paths: list[Path],
    cand_models: list[onnx.ModelProto],
    data: Any,
    samples: int | None = None,
    layers: bool = True,
    options: DecoderOptions | None = None,
) -> DecoderCompareResult:
    """The decoder comparison ``compare_models`` dispatches to (module docstring); ``data`` is a
    token ``.npz``, a ``.txt`` (with ``options.tokenizer``), a mapping of arrays or an [N, T] array."""
    from edgeq.data.tokens import load_tokens

    opts = options or DecoderOptions()
    ref_layout = kv_layout(ref_model)
    if ref_layout is None:
        raise DataError(f"{ref_path}: not a KV-cache decoder")
    layouts = [_candidate_layout(p, m, ref_layout) for p, m in zip(cand_paths, cand_models, strict=True)]
    tokens = load_tokens(data, opts.tokenizer, seq_len=opts.seq_len, samples=samples)
    ids = tokens.sequences
    vocab = _vocab(ref_model)
    if vocab and int(ids.max()) >= vocab:
        raise DataError(f"{tokens.origin}: token id {int(ids.max())} is outside the model's {vocab}-token vocabulary; wrong tokenizer?")

    layer_maps = [quantized_layer_tensors(m, ref_model) if layers else {} for m in cand_models]
    ref_session = KVSession(ref_model, ref_layout, str(ref_path), sorted({t for lm in layer_maps for t in lm}))
    cand_sessions = [
        KVSession(m, layout, str(p), list(lm)) for m, layout, p, lm in zip(cand_models, layouts, cand_paths, layer_maps, strict=True)
    ]
    del cand_models
    sums = [metrics.NextTokenSums() for _ in cand_sessions]
    errors = [LayerErrors(lm) for lm in layer_maps]
    for row in ids:  # one sequence per run: the chunk is the batch
        seq = row[None, :]
        runs = zip(ref_session.chunks(seq, opts.chunk), *(s.chunks(seq, opts.chunk) for s in cand_sessions), strict=True)
        for (start, ref_values), *cand_runs in runs:
            targets = seq[:, start + 1 : start + opts.chunk + 1]  # the last token predicts nothing
            n = targets.shape[1]
            for acc, err, (_, values) in zip(sums, errors, cand_runs, strict=True):
                if n:
                    acc.add(ref_values["logits"][:, :n], values["logits"][:, :n], targets)
                err.add(ref_values, values)

    prompts = ids[: opts.prompts, : opts.prompt_tokens]
    generated: list[list[np.ndarray]] = [[] for _ in range(len(cand_sessions) + 1)]
    for lo in range(0, prompts.shape[0], opts.batch_size):
        batch = prompts[lo : lo + opts.batch_size]
        for out, session in zip(generated, [ref_session, *cand_sessions], strict=True):
            out.append(session.generate(batch, opts.new_tokens, opts.chunk))
    ref_tokens = np.concatenate(generated[0])

    ref_bytes = file_bytes(ref_path)
    result = DecoderCompareResult(
        reference=str(ref_path), data=tokens.origin, sequences=int(ids.shape[0]), scored_tokens=sums[0].tokens,
        chunk=opts.chunk, prompts=int(prompts.shape[0]), prompt_tokens=int(prompts.shape[1]), new_tokens=opts.new_tokens,
        reference_file_bytes=ref_bytes, reference_perplexity=metrics.perplexity(sums[0].reference_nll, sums[0].tokens),
        reference_kv_bytes_per_token=ref_layout.bytes_per_token,
    )
    for name, path, acc, err, gen, layout in zip(unique_names(cand_paths), cand_paths, sums, errors, generated[1:],
                                                 layouts, strict=True):
        result.kv_bytes_per_token[name] = layout.bytes_per_token
        size = file_bytes(path)
        ppl = metrics.perplexity(acc.candidate_nll, acc.tokens)
        agreement, first = metrics.greedy_agreement(ref_tokens, np.concatenate(gen))
        result.variants.append(
            VariantResult(
                name=name, path=str(path), file_bytes=size, size_ratio=size / ref_bytes if ref_bytes else 0.0,
                metrics={
                    "perplexity": ppl,
                    "perplexity_ratio": ppl / result.reference_perplexity,
                    "next_token_agreement": acc.top1_matches / acc.tokens,
                    "kl_divergence": acc.kl / acc.tokens,
                    "greedy_agreement": agreement,
                    "greedy_first_divergence": first,
                },
                latency_ms=None, energy_mj=None, energy_reason=ENERGY_REASON, layers=err.rows(),
            )
        )
    return result
