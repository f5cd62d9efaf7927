"""Every shipped board profile against the TensorRT facts it rests on (``edgeq.targets.facts``).

A profile is data a person edits; the facts are TensorRT's and NVIDIA's documents, each named
beside its value in ``facts.py``. A profile that claims fp8 on an Orin, a JetPack with the wrong
TensorRT, DLA on a GPU without it, or an opset its default TensorRT cannot parse fails here.
"""

from __future__ import annotations

import inspect

import pytest

from edgeq.targets import facts, list_targets, parse_version
from edgeq.targets.profile import TargetProfile

JETSONS = [p for p in list_targets() if p.uses_tensorrt]


def _cc(profile: TargetProfile) -> tuple[int, ...]:
    assert profile.gpu is not None
    return parse_version(profile.gpu.compute_capability)


def test_every_fact_names_its_source() -> None:
    source = inspect.getsource(facts)
    for name in ("PARSER_MAX_OPSET", "PARSED_ABOVE_CEILING", "QDQ_TYPE_MIN_VERSION", "FP8_MIN_COMPUTE",
                 "FP4_MIN_COMPUTE", "INT8_MIN_COMPUTE", "DLA_COMPUTE", "JETPACK_TENSORRT", "TRT_MIN_VERSION"):
        before = source[: source.index(f"\n{name}")]
        comment = before.rsplit("\n\n", 1)[-1]
        assert comment.lstrip().startswith("#"), f"{name} has no comment naming its source"
    assert all(len(row[-1]) > 20 for row in (*facts.PARSER_MAX_OPSET, *facts.PARSED_ABOVE_CEILING))


@pytest.mark.parametrize("profile", JETSONS, ids=lambda p: p.name)
def test_jetpack_versions_bring_the_documented_tensorrt(profile: TargetProfile) -> None:
    assert profile.tensorrt is not None
    for jetpack, trt in profile.tensorrt.jetpack.items():
        assert facts.JETPACK_TENSORRT.get(jetpack) == trt, f"{profile.name}: JetPack {jetpack} ships TensorRT {trt}?"


@pytest.mark.parametrize("profile", JETSONS, ids=lambda p: p.name)
def test_precisions_follow_the_compute_capability(profile: TargetProfile) -> None:
    cc = _cc(profile)
    assert profile.precision.int8 == (cc >= facts.INT8_MIN_COMPUTE)
    assert profile.precision.fp8 == (cc >= facts.FP8_MIN_COMPUTE)
    assert profile.precision.fp4 == (cc >= facts.FP4_MIN_COMPUTE)
    assert not (profile.precision.int2_weight_only or profile.precision.nf4_weight_only), "TensorRT has no INT2/NF4"


@pytest.mark.parametrize("profile", JETSONS, ids=lambda p: p.name)
def test_dla_only_where_the_soc_has_it(profile: TargetProfile) -> None:
    if profile.dla.cores:
        assert _cc(profile)[:2] in facts.DLA_COMPUTE
        assert set(profile.dla.precisions) <= set(facts.DLA_PRECISIONS)


@pytest.mark.parametrize("profile", JETSONS, ids=lambda p: p.name)
def test_preferred_opset_is_parsed_by_the_default_tensorrt(profile: TargetProfile) -> None:
    _, trt = profile.tensorrt_version()
    assert profile.onnx.preferred_opset <= facts.parser_max_opset(parse_version(trt))


@pytest.mark.parametrize("profile", JETSONS, ids=lambda p: p.name)
def test_allowed_quantized_types_have_a_parser_that_reads_them(profile: TargetProfile) -> None:
    assert profile.tensorrt is not None
    newest = max(parse_version(v) for v in profile.tensorrt.jetpack.values())
    for key, qdq in (("fp8", "fp8"), ("fp4", "fp4"), ("int4_weight_only", "int4")):
        if key in profile.allowed_precisions():
            assert newest >= facts.QDQ_TYPE_MIN_VERSION[qdq]
