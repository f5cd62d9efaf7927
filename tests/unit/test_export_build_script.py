"""build.sh: the exact trtexec command for each TensorRT, and a script that runs as written."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeq.errors import UnsupportedError
from edgeq.export.build_script import render_build_script, trt_version_code, trtexec_args, trtexec_command
from edgeq.targets import check_plan, load_target

USER_TRT11 = """
schema_version = 1
name = "future-board"
kind = "jetson"
backend = "tensorrt"
[gpu]
architecture = "Blackwell"
compute_capability = "11.0"
[tensorrt]
default_jetpack = "8.0"
jetpack = { "8.0" = "11.2.0" }
[precision]
fp16 = true
int8 = true
int4_weight_only = true
prefer_float = "fp16"
[dla]
cores = 1
precisions = ["fp16", "int8"]
[memory]
workspace_mib = 2048
"""

HEAD = ["--onnx=model.onnx", "--saveEngine=model.engine"]
TAIL = ["--timingCacheFile=timing.cache"]


def test_tensorrt10_qdq_is_strongly_typed():
    plan = check_plan("jetson-orin-nano", "int8", "int8")
    assert trtexec_args(plan, 1024) == [*HEAD, "--stronglyTyped", "--memPoolSize=workspace:1024", *TAIL]
    int4 = check_plan("jetson-orin-nano", "int4")
    assert trtexec_args(int4, 1024) == [*HEAD, "--stronglyTyped", "--memPoolSize=workspace:1024", *TAIL]


def test_tensorrt8_uses_precision_flags():
    plan = check_plan("jetson-xavier-nx", "int8", "int8")
    assert trtexec_args(plan, 1024) == [*HEAD, "--fp16", "--int8", "--memPoolSize=workspace:1024", *TAIL]
    orin_jp6 = check_plan("jetson-orin-nano", "int8", "int8", jetpack="6.0")  # TensorRT 8.6
    assert "--stronglyTyped" not in trtexec_args(orin_jp6, 512) and "--int8" in trtexec_args(orin_jp6, 512)


def test_tensorrt_before_8_4_has_no_memory_pools():
    plan = check_plan("jetson-nano")  # JetPack 4.6, TensorRT 8.2.1
    assert trtexec_args(plan, 512) == [*HEAD, "--fp16", "--workspace=512", *TAIL]
    xavier_jp4 = check_plan("jetson-agx-xavier", "int8", "int8", jetpack="4.6")
    assert trtexec_args(xavier_jp4, 2048) == [*HEAD, "--fp16", "--int8", "--workspace=2048", *TAIL]


def test_dla_builds_are_weakly_typed_with_the_cache():
    plan = check_plan("jetson-agx-orin", "int8", "int8", dla=True, dla_core=1)
    assert trtexec_args(plan, 4096) == [
        *HEAD, "--fp16", "--int8", "--calib=calibration.cache", "--useDLACore=1", "--allowGPUFallback",
        "--memPoolSize=workspace:4096", *TAIL,
    ]
    fp16 = check_plan("jetson-xavier-nx", dla=True)
    assert trtexec_args(fp16, 1024) == [
        *HEAD, "--fp16", "--useDLACore=0", "--allowGPUFallback", "--memPoolSize=workspace:1024", *TAIL,
    ]


def test_tensorrt11_has_no_precision_flags_and_no_implicit(tmp_path: Path):
    path = tmp_path / "future.toml"
    path.write_text(USER_TRT11)
    profile = load_target(path)
    plan = check_plan(profile, "int8", "int8")
    assert trtexec_args(plan, 2048) == [*HEAD, "--memPoolSize=workspace:2048", *TAIL]
    with pytest.raises(UnsupportedError, match=r"TensorRT 11\.2\.0 has no DLA"):
        check_plan(profile, "int8", "int8", dla=True)


def test_dynamic_shapes_are_pinned():
    plan = check_plan("jetson-orin-nano", "int4")
    command = trtexec_command(plan, 1024, {"input_ids": [1, 128], "attention_mask": [1, 128]})
    spec = "input_ids:1x128,attention_mask:1x128"
    assert f"--minShapes={spec} --optShapes={spec} --maxShapes={spec}" in command
    assert command.startswith("trtexec --onnx=model.onnx")


def test_cpu_targets_have_no_engine():
    with pytest.raises(UnsupportedError, match="builds no TensorRT engine"):
        trtexec_args(check_plan("x86-cpu"), 0)


def test_version_codes_match_trtexec_banner():
    assert trt_version_code("8.5.2") == 8502
    assert trt_version_code("10.3.0") == 100300
    assert trt_version_code("8.2.1") == 8201


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("sha256sum") is None, reason="needs sh and sha256sum")
def test_build_script_runs_trtexec_with_its_arguments(tmp_path: Path):
    """A stand-in trtexec on PATH records what build.sh passes (the script is what is tested)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    model = bundle / "model.onnx"
    model.write_bytes(b"not really onnx, only hashed")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    plan = check_plan("jetson-xavier-nx", "int8", "int8")  # TensorRT 8.5.2
    script = bundle / "build.sh"
    script.write_text(render_build_script(plan, 1024, checksums={"model.onnx": digest}, edgeq_version="0.1.0"))
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    record = tmp_path / "args.txt"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300]"; exit 0; fi\n'
        f'printf "%s\\n" "$@" > {record}\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run([str(script), "--verbose"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert record.read_text().split() == [*trtexec_args(plan, 1024), "--verbose"]
    # trtexec reports TensorRT 10 for a bundle exported for 8.5: warned, not refused.
    assert "exported for TensorRT 8.5.2" in proc.stderr

    model.write_bytes(b"tampered")
    proc = subprocess.run([str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "does not match the bundle manifest" in proc.stderr
