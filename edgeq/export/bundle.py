"""``export_bundle``: a model, quantized and shaped for one board, in a folder the board can use.

The bundle is what crosses from the workstation to the device, so everything in it is checked
here, where the tools are: the precision plan against the target profile (refusing what the
board cannot run), the graph against the TensorRT lint, and the bundle's ONNX against the
quantized model that went in, in onnxruntime, on real or synthesised inputs. Then the folder is
written in one atomic step: ``model.onnx`` (+ external data), ``calibration.cache`` when the
board's TensorRT calibrates implicitly (DLA), ``build.sh`` with the trtexec command for that
TensorRT, a README for the person at the board, and ``manifest.json`` with every file's sha256.

This module is the order of the steps; each step is its own module (``reference``, ``fit``,
``verify``, ``folder``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.export.detect import ModelFormats, model_formats
from edgeq.export.feeds import dynamic_shapes, resolve_shapes, synthetic_feeds
from edgeq.export.fit import Fitted, fit_to_target
from edgeq.export.folder import write_bundle
from edgeq.export.reference import Reference, calibration_inputs, reference_model
from edgeq.export.result import ExportResult
from edgeq.export.verify import check_tensorrt_lint, verify_against_reference
from edgeq.targets import PrecisionPlan, TargetProfile, check_plan, load_target

if TYPE_CHECKING:
    from edgeq.data.source import DataSource
    from edgeq.graph.decoder import DecoderInfo


def export_bundle(
    model_path: str | Path,
    target: str | Path | TargetProfile,
    weights: str | None = None,
    activations: str | None = None,
    data: str | Path | DataSource | None = None,
    calib: str | Path | None = None,
    dla: bool = False,
    allow_widen: bool = False,
    output: str | Path = "bundle",
    *,
    jetpack: str | None = None,
    block_size: int | None = None,
    method: str | None = None,
    dla_core: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
    samples: int | None = None,
    batch_size: int = 8,
    build_engine: bool = False,
    progress: bool = True,
    force: bool = False,
    tokenizer: str | Path | None = None,
    context_length: int | None = None,
) -> ExportResult:
    """Quantize (if asked), fit to ``target``, verify, and write the bundle folder atomically.

    ``force`` replaces an ``output`` folder that is not provably an edgeq bundle of its own files.
    For a KV-cache decoder the bundle also carries ``tokenizer`` (else one found beside the model),
    the generation settings and the KV layout (``export.decoder``); ``context_length`` (default:
    what the model states) sizes the KV cache in the plan's memory check.
    """
    from edgeq.frontends.resolve import refuse_outputs_over_inputs, resolve_model
    from edgeq.graph.io import load_model

    model_path = Path(model_path)
    output = Path(output)
    paths: list[str | Path | None] = [p for p in (data, calib, tokenizer) if isinstance(p, (str, Path))]
    refuse_outputs_over_inputs({"-o": output}, model_path, paths, folders=("-o",))
    if model_path.is_dir() and (model_path / "manifest.json").is_file():
        from edgeq.export.readback import check_bundle_input

        check_bundle_input(model_path)  # a tampered bundle is not re-checksummed in silence
    profile = load_target(target)
    _check_output(output, force)
    onnx_path = resolve_model(model_path)  # a file.py:factory spec: its checked, cached export
    model = load_model(onnx_path)
    decoder = _decoder_info(model, onnx_path)
    formats = model_formats(model)
    weights, activations, block_size = _precision_from_model(model_path, formats, profile, weights, activations, block_size)
    if build_engine:
        _check_engine_build(profile)
    plan = _plan(profile, formats, weights, activations, dla, allow_widen, block_size, jetpack, dla_core)
    source, table, notes = calibration_inputs(data, calib, model, onnx_path, formats, plan, samples, batch_size)
    feeds, build_shapes, inputs_text, shape_notes = _verification_inputs(model, shapes, source, decoder)
    notes += shape_notes
    tokenizer_path = None
    if decoder is not None:
        from edgeq.export.decoder import find_tokenizer

        tokenizer_path = find_tokenizer(model_path, Path(tokenizer) if tokenizer is not None else None)
    elif tokenizer is not None:
        raise ConfigError(f"--tokenizer: {model_path} is not a KV-cache decoder; a tokenizer goes only with one")

    # 1. The quantized model that goes in (the reference the bundle must match).
    reference = reference_model(model, model_path, formats, plan, profile, method, source, table, progress)
    notes += reference.notes
    bundle_model = reference.bundle_model

    # 2. Into containers the target's runtime has.
    fitted = fit_to_target(bundle_model, plan, profile, allow_widen)
    notes += fitted.notes
    decoder_block = None
    if decoder is not None:
        decoder_block, decoder_notes = _decoder_block(bundle_model, model_path, decoder, context_length, tokenizer_path,
                                                      profile, plan)
        notes += decoder_notes

    # 3. Checks: TensorRT lint, then onnxruntime against the reference.
    lint = check_tensorrt_lint(bundle_model, profile, model_path)
    strict = plan.quantization != "implicit" or not formats.quantized
    verification = verify_against_reference(model_path, bundle_model, reference.model, reference.name, feeds,
                                             inputs_text, build_shapes, strict)

    result = _result(output, profile, plan, formats, reference, fitted, lint, verification, notes)
    dynamic = dynamic_shapes(bundle_model, build_shapes)
    if profile.uses_tensorrt:
        from edgeq.export.build_script import trtexec_command

        result.build_command = trtexec_command(plan, profile.memory.workspace_mib, dynamic or None)

    # 4. The folder, in one atomic step.
    write_bundle(output, bundle_model, profile, plan, result, build_shapes, dynamic, reference.cache_text, build_engine,
                 decoder_block, tokenizer_path)
    return result


def _decoder_info(model: onnx.ModelProto, onnx_path: Path) -> DecoderInfo | None:
    """The decoder facts (``genai_config.json`` beside the model included), or None for other models."""
    from edgeq.graph.decoder import describe_decoder
    from edgeq.graph.passes.base import to_ir

    return describe_decoder(to_ir(model), folder=onnx_path.parent)


def _decoder_block(
    model: onnx.ModelProto, model_path: Path, info: DecoderInfo, context_length: int | None, tokenizer: Path | None,
    profile: TargetProfile, plan: PrecisionPlan,
) -> tuple[dict[str, Any], list[str]]:
    """The manifest's decoder block and the plan's decoder notes (a refusal where it does not fit)."""
    from edgeq.export.decoder import decoder_section
    from edgeq.graph.inspect import tensor_nbytes
    from edgeq.targets.decoder_plan import check_decoder_plan

    stated = info.context_length
    if context_length is not None and context_length < 1:
        raise ConfigError(f"--context-length must be at least 1, got {context_length}")
    if context_length is not None and stated is not None and context_length > stated:
        raise ConfigError(f"--context-length {context_length}: {model_path} holds at most {stated} positions "
                          f"({info.sources.get('context_length', 'model')})")
    context = context_length or stated
    if context is None:
        raise ConfigError(f"{model_path}: nothing states the decoder's context length (genai_config.json, metadata, "
                          "rotary cache); pass --context-length N")
    block = decoder_section(model, model_path, info, context, tokenizer)
    weights = sum(tensor_nbytes(t) for t in model.graph.initializer)
    notes = check_decoder_plan(profile, plan, block["kv"]["bytes_per_token"], context, weights)
    if profile.uses_tensorrt:
        notes.append("build.sh builds the decoder at the verification shapes only; a TensorRT engine for generation "
                     "needs profiles over the past length, which edgeq does not write yet (edgeq-run generate runs "
                     "the ONNX with onnxruntime)")
    return block, notes


def _check_output(output: Path, force: bool) -> None:
    """``-o`` must be a new folder, an empty one, or an edgeq bundle holding only its own files.

    The folder is replaced whole, so anything else in it would be lost: a folder that merely
    holds a file called manifest.json, or a bundle the user added notes to, is refused unless
    ``force`` says to replace it anyway.
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"-o {output}: exists and is a file; give a folder for the bundle")
    if force or not output.is_dir() or not any(output.iterdir()):
        return
    from edgeq_runtime.errors import BundleError
    from edgeq_runtime.manifest import MANIFEST_NAME, Manifest

    try:
        manifest = Manifest.read(output)
    except (BundleError, OSError, ValueError):
        raise ConfigError(
            f"-o {output}: exists, is not empty and is not an edgeq bundle; choose another folder "
            "(or --force to replace it and everything in it)"
        ) from None
    listed = {entry.path for entry in manifest.files} | {MANIFEST_NAME}
    extra = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file() and str(p.relative_to(output)) not in listed)
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise ConfigError(f"-o {output}: the bundle holds files its manifest does not list ({shown}) that would be lost; "
                          "move them or pass --force")


def _precision_from_model(
    model_path: Path, formats: ModelFormats, profile: TargetProfile, weights: str | None, activations: str | None,
    block_size: int | None,
) -> tuple[str | None, str | None, int | None]:
    """(weights, activations, block size): an already quantized model decides them itself."""
    if formats.quantized and (weights or activations):
        raise ConfigError(
            f"{model_path}: already quantized ({formats.describe()}); export it without --weights/--activations, "
            "or pass the float model"
        )
    if formats.other_contrib and profile.uses_tensorrt:
        ops = ", ".join(sorted(formats.other_contrib))
        raise UnsupportedError(f"{model_path}: uses onnxruntime-only ops ({ops}) that TensorRT cannot parse; export for x86-cpu/arm64-cpu")
    if formats.quantized:
        weights = formats.weights()
        activations = "int8" if formats.int8_activations else "fp8" if formats.fp8_activations else "none"
        if activations != "none":
            weights = activations
        if block_size is None and formats.block_sizes:
            block_size = max(formats.block_sizes)
    elif activations in ("int8", "fp8") and weights is None:
        weights = activations
    return weights, activations, block_size


def _check_engine_build(profile: TargetProfile) -> None:
    """``--build-engine`` needs a TensorRT target and tensorrt installed: refused before any work."""
    from edgeq.export.engine import import_tensorrt

    if not profile.uses_tensorrt:
        raise ConfigError(f"--build-engine: {profile.name} runs onnxruntime; there is no engine to build")
    import_tensorrt()


def _plan(
    profile: TargetProfile, formats: ModelFormats, weights: str | None, activations: str | None, dla: bool,
    allow_widen: bool, block_size: int | None, jetpack: str | None, dla_core: int,
) -> PrecisionPlan:
    """The precision plan, checked against the board (a note where the model's blocks are unusual)."""
    plan = check_plan(profile, weights, activations, dla, allow_widen=allow_widen, block_size=block_size,
                      jetpack=jetpack, dla_core=dla_core)
    if (formats.quantized and plan.block_size and profile.uses_tensorrt and plan.stored_weights == "int4"
            and formats.block_sizes - {plan.block_size}):
        plan.notes.append(
            f"the model uses block size {sorted(formats.block_sizes)}; TensorRT documents only 128 for INT4"
        )
    return plan


def _verification_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None, source: DataSource | None,
    decoder: DecoderInfo | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[int]], str, list[str]]:
    """(feeds, build shapes, what the feeds are, notes): one data sample, else synthetic inputs
    (a decoder's past and mask synthesised beside the sample's tokens when the data lacks them)."""
    sample = next(iter(source.batches(1)), None) if source is not None else None
    build_shapes, notes = resolve_shapes(model, shapes, sample, decoder)
    feeds = dict(sample) if sample is not None else synthetic_feeds(model, build_shapes)
    if sample is not None and decoder is not None:
        feeds = {**synthetic_feeds(model, build_shapes), **feeds}
    inputs_text = f"1 sample of {source.origin}" if sample is not None and source is not None else "synthetic inputs"
    return feeds, build_shapes, inputs_text, list(notes)


def _result(
    output: Path, profile: TargetProfile, plan: PrecisionPlan, formats: ModelFormats, reference: Reference,
    fitted: Fitted, lint: str, verification: dict[str, Any], notes: list[str],
) -> ExportResult:
    """The result before the folder exists (``files`` and ``engine`` are filled in as it is written)."""
    widen_report = fitted.widen_report
    return ExportResult(
        bundle=str(output), target=profile.name, plan=plan, files=[], model_formats=formats.describe(),
        quantization=reference.quantization,
        widening=None if widen_report is None or not widen_report.nodes else {"text": widen_report.describe(), **widen_report.to_dict()},
        fp16=fitted.fp16, lint=lint, verification=verification, notes=notes,
    )
