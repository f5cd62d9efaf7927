"""Target profiles: every shipped board loads, bad profiles fail naming file and field, and the
precision planner refuses what a board cannot run, saying what would work."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeq.errors import ConfigError, UnsupportedError
from edgeq.targets import (
    TARGETS_DIR,
    PrecisionPlan,
    check_plan,
    list_targets,
    load_target,
    parse_version,
)

SHIPPED = [
    "arm64-cpu", "jetson-agx-orin", "jetson-agx-xavier", "jetson-nano", "jetson-orin-nano",
    "jetson-orin-nx", "jetson-thor", "jetson-xavier-nx", "x86-cpu",
]

MINIMAL = """
schema_version = 1
name = "my-board"
kind = "jetson"
backend = "tensorrt"

[gpu]
architecture = "Ampere"
compute_capability = "8.7"

[tensorrt]
default_jetpack = "6.2"
jetpack = { "6.2" = "10.3.0" }

[precision]
fp16 = true
int8 = true
int4_weight_only = true
prefer_float = "fp16"

[memory]
workspace_mib = 512
"""


def test_every_shipped_profile_loads_and_is_named_after_its_file():
    names = [t.name for t in list_targets()]
    assert names == SHIPPED
    for path in TARGETS_DIR.glob("*.toml"):
        assert load_target(path.stem).name == path.stem


def test_shipped_facts_match_the_reference():
    nano = load_target("jetson-nano")
    assert nano.gpu is not None and nano.gpu.compute_capability == "5.3"
    assert not nano.precision.int8 and nano.tensorrt_version() == ("4.6", "8.2.1")
    orin = load_target("jetson-orin-nano")
    assert orin.tensorrt is not None and orin.tensorrt.jetpack["6.1"] == "10.3.0"
    assert orin.tensorrt.jetpack["5.1"].startswith("8.5")
    assert load_target("jetson-agx-orin").dla.cores == 2
    assert load_target("jetson-thor").gpu.compute_capability == "11.0"  # type: ignore[union-attr]
    assert load_target("jetson-thor").precision.fp4
    assert load_target("jetson-agx-orin").power.total_rail == ""  # no single total rail there
    assert load_target("x86-cpu").tensorrt is None


def test_allowed_precisions_follow_the_tensorrt_of_each_jetpack():
    orin = load_target("jetson-orin-nano")
    assert "int4_weight_only" in orin.allowed_precisions("6.2")
    assert "int4_weight_only" not in orin.allowed_precisions("5.1")
    assert "int4_weight_only" not in load_target("jetson-xavier-nx").allowed_precisions()


def test_user_profile_by_path(tmp_path: Path):
    path = tmp_path / "board.toml"
    path.write_text(MINIMAL)
    profile = load_target(str(path))
    assert profile.name == "my-board" and profile.dla.cores == 0
    assert check_plan(profile, "int4").stored_weights == "int4"


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace('compute_capability = "8.7"', "compute_capability = 87"), "gpu.compute_capability"),
        (lambda t: t + "\n[dla]\ncores = -1\n", "dla.cores"),
        (lambda t: t.replace('name = "my-board"\n', ""), "'name'"),
        (lambda t: t.replace("fp16 = true", "fp16 = true\nint3 = true"), "precision.int3"),
        (lambda t: t.replace('default_jetpack = "6.2"', 'default_jetpack = "7.0"'), "tensorrt.default_jetpack"),
        (lambda t: t.replace('"6.2" = "10.3.0"', '"6.2" = "ten"'), "tensorrt.jetpack"),
        (lambda t: t.replace("int8 = true", "int8 = 1"), "precision.int8"),
        (lambda t: t.replace('backend = "tensorrt"', 'backend = "cuda"'), "'backend'"),
        (lambda t: t + '\n[power]\nrails = ["A"]\ntotal_rail = "B"\n', "power.total_rail"),
        (lambda t: t.replace("schema_version = 1", "schema_version = 9"), "schema_version"),
        (lambda t: t + "\n[dla]\ncores = 2\n", "dla.precisions"),
        (lambda t: t.replace("[gpu]", "[gpuu]"), "gpuu"),
    ],
)
def test_invalid_profile_names_file_and_field(tmp_path: Path, edit, field):
    path = tmp_path / "bad.toml"
    path.write_text(edit(MINIMAL))
    with pytest.raises(ConfigError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message and field in message
    assert "\n" not in message


def test_not_toml_and_missing(tmp_path: Path):
    bad = tmp_path / "x.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_target(bad)
    with pytest.raises(ConfigError, match=r"unknown target 'jetson-orin-nanoo'.*jetson-orin-nano"):
        load_target("jetson-orin-nanoo")


# -- planning -----------------------------------------------------------------------------------


def test_int8_on_jetson_nano_is_refused_with_what_works():
    with pytest.raises(UnsupportedError) as info:
        check_plan("jetson-nano", "int8", "int8")
    message = str(info.value)
    assert "jetson-nano" in message and "int8" in message
    assert "fp16" in message and "jetson-orin-nano" in message


def test_int4_on_a_tensorrt8_jetpack_is_refused():
    with pytest.raises(UnsupportedError) as info:
        check_plan("jetson-orin-nano", "int4", jetpack="5.1")
    message = str(info.value)
    assert "TensorRT 8.5.2" in message and "int4 weight-only" in message and ">= 10.0" in message
    assert "--jetpack 6.2" in message
    with pytest.raises(UnsupportedError, match=r"no JetPack for this board has it.*jetson-orin-nano"):
        check_plan("jetson-xavier-nx", "int4")


def test_dla_on_a_board_without_one_is_refused():
    with pytest.raises(UnsupportedError) as info:
        check_plan("jetson-orin-nano", "int8", "int8", dla=True)
    message = str(info.value)
    assert "jetson-orin-nano" in message and "no DLA" in message and "jetson-agx-orin" in message
    with pytest.raises(UnsupportedError, match="DLA runs fp16 and int8 only"):
        check_plan("jetson-agx-orin", "int4", dla=True)
    with pytest.raises(UnsupportedError, match="DLA core 2 does not exist"):
        check_plan("jetson-agx-orin", "int8", "int8", dla=True, dla_core=2)


def test_formats_tensorrt_lacks_need_allow_widen():
    for weights in ("int2", "nf4"):
        with pytest.raises(UnsupportedError, match=f"TensorRT has no {weights}.*--allow-widen"):
            check_plan("jetson-orin-nano", weights)
    int2 = check_plan("jetson-orin-nano", "int2", allow_widen=True)
    assert int2.widening is not None and int2.widening.container == "int4" and int2.stored_weights == "int4"
    assert int2.onnx_format == "qdq" and int2.block_size == 128
    assert any("memory of int4" in n for n in int2.notes)
    nf4 = check_plan("jetson-orin-nano", "nf4", allow_widen=True)
    assert nf4.widening is not None and nf4.widening.container == "fp16"
    # Without INT4 in its TensorRT, int2 can only go to fp16.
    xavier = check_plan("jetson-xavier-nx", "int2", allow_widen=True)
    assert xavier.widening is not None and xavier.widening.container == "fp16"


def test_int8_weight_only_is_refused_on_tensorrt_with_the_w8a8_hint():
    with pytest.raises(UnsupportedError, match="--activations int8"):
        check_plan("jetson-agx-orin", "int8")


def test_tensorrt_plans_per_version():
    orin = check_plan("jetson-orin-nano", "int8", "int8")
    assert orin.strongly_typed and orin.quantization == "explicit" and orin.float_precision == "fp16"
    assert orin.fp16_in_graph
    xavier = check_plan("jetson-xavier-nx", "int8", "int8")
    assert not xavier.strongly_typed and not xavier.fp16_in_graph and xavier.tensorrt == "8.5.2"
    dla = check_plan("jetson-agx-orin", "int8", "int8", dla=True, dla_core=1)
    assert dla.quantization == "implicit" and dla.calibration_cache and dla.dla_core == 1 and dla.gpu_fallback
    assert not dla.strongly_typed and dla.stored_weights == "fp32"
    nano = check_plan("jetson-nano")
    assert nano.quantization == "none" and nano.float_precision == "fp16" and not nano.strongly_typed


def test_cpu_plans_pick_onnxruntime_formats():
    assert check_plan("x86-cpu", "int4").onnx_format == "matmulnbits"
    assert check_plan("x86-cpu", "int2").stored_weights == "int2"
    assert check_plan("arm64-cpu", "nf4").onnx_format == "bnb4"
    assert check_plan("x86-cpu", "int8", "int8").onnx_format == "qdq"
    assert check_plan("x86-cpu").float_precision == "fp32"
    with pytest.raises(UnsupportedError, match="no DLA"):
        check_plan("x86-cpu", "int8", "int8", dla=True)


def test_block_size_other_than_128_is_noted_for_tensorrt():
    plan = check_plan("jetson-orin-nano", "int4", block_size=32)
    assert plan.block_size == 32 and any("128" in n and "32" in n for n in plan.notes)
    assert not check_plan("jetson-orin-nano", "int4").notes


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="--weights: unknown value 'int3'"):
        check_plan("x86-cpu", "int3")
    with pytest.raises(ConfigError, match="W8A8 needs --weights int8"):
        check_plan("x86-cpu", "int4", "int8")
    with pytest.raises(ConfigError, match=r"has no JetPack '9\.9'"):
        check_plan("jetson-orin-nano", "int4", jetpack="9.9")


def test_plan_round_trips_through_json():
    plan = check_plan("jetson-orin-nano", "int2", allow_widen=True)
    again = PrecisionPlan.from_json(plan.to_json())
    assert again == plan and again.widening is not None


def test_parse_version():
    assert parse_version("10.3.0") == (10, 3, 0) and parse_version("8.5") == (8, 5)
    with pytest.raises(ConfigError):
        parse_version("ten")
