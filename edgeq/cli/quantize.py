"""``edgeq quantize``: int8 QDQ, weight-only 8/4/2-bit and NF4/FP4, or mixed precision under a budget."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from edgeq.cli import app
from edgeq.cli._common import choice
from edgeq.errors import ConfigError

if TYPE_CHECKING:
    from edgeq.quantize.config import QuantizeConfig

# The precedence edgeq.calibrate.table documents, for both commands' help.
CALIB_HELP = "Calibration table from edgeq calibrate. With --data too, --data decides the activation ranges (noted in the summary)."

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str, option: str = "--budget") -> int:
    """``12MB`` -> 12_000_000 bytes; ``12MiB`` -> 12 * 2**20."""
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{option}: cannot read {text!r} as a size; expected e.g. 12MB, 800KB, 1.5GiB")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


def build_config(
    weights: str,
    activations: str,
    block_size: int,
    symmetric: bool,
    method: str,
    onnx_format: str | None,
    accuracy_level: int,
    embeddings: bool,
    exclude: str | None,
    op_types: str | None,
    smoothquant: float | None,
    budget: str | None,
    avg_bits: float | None,
    candidates: str,
    layout: str = "tensorrt",
    reduce_range: bool = False,
    weight_budget: str | None = None,
    kv_cache: str = "none",
    lm_head: str | None = None,
) -> QuantizeConfig:
    """Map CLI options onto one config object (which checks its own values); the library does the rest."""
    from edgeq.quantize.config import Int8Config, MixedPrecisionConfig, WeightOnlyConfig

    choice(activations, ("int8", "fp8", "none"), "--activations")
    limits = {"--budget": budget, "--weight-budget": weight_budget, "--avg-bits": avg_bits}
    given = [option for option, value in limits.items() if value is not None]
    if lm_head is not None and (given or activations == "int8"):
        raise ConfigError("--lm-head applies to weight-only quantization (--weights without --budget/--weight-budget/--avg-bits/--activations int8)")
    if given:
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)}: give one, not both")
        return MixedPrecisionConfig(
            candidates=tuple(c.strip() for c in candidates.split(",") if c.strip()),
            budget_bytes=parse_size(budget) if budget is not None else None,
            weight_budget_bytes=parse_size(weight_budget, "--weight-budget") if weight_budget is not None else None,
            avg_bits=avg_bits,
            block_size=block_size,
            method=method,  # type: ignore[arg-type]
            embeddings=embeddings,
            exclude=exclude,
            kv_cache=kv_cache,
        )
    if activations == "fp8" or weights in ("fp8", "nvfp4"):
        return _tensorrt_float_config(weights, activations, exclude, op_types, kv_cache)
    if activations == "int8":
        if weights != "int8":
            raise ConfigError(f"--weights {weights} with --activations int8: W8A8 needs --weights int8")
        choice(layout, ("tensorrt", "onnxruntime"), "--layout")
        kwargs: dict[str, Any] = {"exclude": exclude, "smoothquant_alpha": smoothquant, "layout": layout, "reduce_range": reduce_range,
                                  "kv_cache": kv_cache}
        if op_types:
            kwargs["op_types"] = tuple(o.strip() for o in op_types.split(",") if o.strip())
        return Int8Config(**kwargs)
    if smoothquant is not None:
        raise ConfigError("--smoothquant applies to --activations int8 only")
    if layout != "tensorrt" or reduce_range:
        raise ConfigError("--layout and --reduce-range apply to --activations int8 only")
    return WeightOnlyConfig(
        weights=weights,  # type: ignore[arg-type]
        block_size=block_size,
        symmetric=symmetric,
        method=method,  # type: ignore[arg-type]
        onnx_format=onnx_format,  # type: ignore[arg-type]
        accuracy_level=accuracy_level,
        embeddings=embeddings,
        exclude=exclude,
        kv_cache=kv_cache,
        lm_head=lm_head,
    )


def _tensorrt_float_config(
    weights: str, activations: str, exclude: str | None, op_types: str | None, kv_cache: str
) -> QuantizeConfig:
    """FP8 W8A8 (``--weights fp8 --activations fp8``) or NVFP4 weight-only (``--weights nvfp4``)."""
    from edgeq.quantize.config import Fp8Config, NvFp4Config

    if weights == "nvfp4":
        if activations != "none":
            raise ConfigError(f"--weights nvfp4 with --activations {activations}: NVFP4 is weight-only here (W4A4 is not built)")
        return NvFp4Config(exclude=exclude, kv_cache=kv_cache)
    if (weights, activations) != ("fp8", "fp8"):
        raise ConfigError(f"--weights {weights} with --activations {activations}: FP8 is W8A8, pass --weights fp8 --activations fp8")
    kwargs: dict[str, Any] = {"exclude": exclude, "kv_cache": kv_cache}
    if op_types:
        kwargs["op_types"] = tuple(o.strip() for o in op_types.split(",") if o.strip())
    return Fp8Config(**kwargs)


@app.command("quantize")
def quantize_command(
    model: Path = typer.Argument(..., help="ONNX model to quantize."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the quantized ONNX."),
    weights: str = typer.Option(
        "int4", "--weights",
        help="int8, int4, int2, nf4, fp4 (bitsandbytes FP4), fp8 (E4M3, with --activations fp8) or nvfp4 (NVIDIA FP4, TensorRT on Thor).",
    ),
    activations: str = typer.Option("none", "--activations", help="int8 or fp8 for W8A8 Q/DQ, none for weight-only."),
    block_size: int = typer.Option(32, "--block-size", help="Weights per scale (weight-only)."),
    symmetric: bool = typer.Option(True, "--symmetric/--asymmetric", help="Zero point or not (weight-only)."),
    method: str = typer.Option("rtn", "--method", help="rtn, hqq, gptq or awq (gptq/awq need --data)."),
    onnx_format: str | None = typer.Option(None, "--format", help="matmulnbits, qdq or bnb4."),
    accuracy_level: int = typer.Option(0, "--accuracy-level", help="MatMulNBits accuracy_level (0-4)."),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Quantize Gather embedding tables."),
    calib: Path | None = typer.Option(None, "--calib", help=CALIB_HELP),
    data: Path | None = typer.Option(
        None, "--data", help=".npz, folder of .npy/.npz, or recipe TOML; for a decoder also a .txt or a token .npz (input_ids/tokens)."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Decoders: tokenizer.json for .txt --data (default: tokenizer.json beside the model)."
    ),
    samples: int | None = typer.Option(None, "--samples", help="Use at most this many samples of --data."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch."),
    exclude: str | None = typer.Option(None, "--exclude", help="Regex of node names to leave in float."),
    op_types: str | None = typer.Option(None, "--op-types", help="Comma list of op types for int8 QDQ."),
    smoothquant: float | None = typer.Option(None, "--smoothquant", help="SmoothQuant alpha (int8)."),
    layout: str = typer.Option("tensorrt", "--layout", help="int8 Q/DQ for tensorrt (its rules) or onnxruntime (its CPU kernels fuse it)."),
    reduce_range: bool = typer.Option(False, "--reduce-range", help="int8, layout onnxruntime: dense weights in [-64, 64] for x86 CPUs without VNNI."),
    kv_cache: str = typer.Option("none", "--kv-cache", help="Decoders: int8 stores past/present as int8, a scale per KV head calibrated on --data."),
    budget: str | None = typer.Option(
        None, "--budget",
        help="Mixed precision: the whole written file's size (weights, scales, zero points, float tensors, graph, metadata), e.g. 12MB.",
    ),
    weight_budget: str | None = typer.Option(
        None, "--weight-budget", help="Mixed precision: bytes of the quantizable matrices only (codes, scales, zero points), e.g. 12MB.",
    ),
    avg_bits: float | None = typer.Option(None, "--avg-bits", help="Mixed precision: average stored bits per weight of the quantizable matrices."),
    candidates: str = typer.Option("int2,int4,int8", "--candidates", help="Mixed precision formats: int2,int4,int8,nf4,fp4,float."),
    lm_head: str | None = typer.Option(
        None, "--lm-head", help="The LM head's (and a tied table's) precision: int8, int4, int2, nf4, fp4 or float; default: int8 (as --weights for int8)."
    ),
    summary: Path | None = typer.Option(None, "--summary", help="Write the quantization summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not print the summary."),
) -> None:
    """Quantize a model: int8 QDQ for TensorRT, weight-only 8/4/2-bit, NF4/FP4, or a size budget."""
    from edgeq.quantize.api import quantize_file

    config = build_config(
        weights, activations, block_size, symmetric, method, onnx_format, accuracy_level,
        embeddings, exclude, op_types, smoothquant, budget, avg_bits, candidates, layout, reduce_range, weight_budget, kv_cache, lm_head,
    )
    result = quantize_file(
        model, config, output, data=data, calibration=calib, summary_path=summary,
        samples=samples, batch_size=batch_size, progress=not quiet, tokenizer=tokenizer,
    )
    if not quiet:
        typer.echo(result.summary.format_text())
    else:  # a run that compressed nothing is said even with --quiet
        for warning in result.summary.warnings:
            typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {output}")
