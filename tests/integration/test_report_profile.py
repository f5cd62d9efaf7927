"""``edgeq profile`` end to end: the runtime's real benchmark rendered into the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.cli import main
from edgeq.profile import profile
from edgeq.report import write_profile_report
from tests.integration.report_browser_cdp import find_chromium, render_page


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(64, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(256, 10)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def test_cli_profile_writes_report_and_json_from_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    html, doc_path = tmp_path / "r.html", tmp_path / "r.json"
    code = main(
        ["profile", str(model), "-o", str(html), "--json", str(doc_path), "--iterations", "40", "--warmup", "5",
         "--energy", "none", "--batch", "2"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "latency p50" in out and f"report: {html}" in out
    section = json.loads(doc_path.read_text())["_data"]["sections"][0]
    bench = section["benchmark"]
    assert bench["iterations"] == 40 and bench["warmup_iterations"] == 5 and bench["batch"] == 2
    assert len(bench["trace_ms"]) == 45
    measured = np.array(bench["trace_ms"][5:])
    assert bench["latency_ms"]["p50"] == pytest.approx(np.percentile(measured, 50), rel=1e-6)
    assert {op["name"] for op in bench["ops"]} >= {"fc1", "fc2"}
    assert section["summary"]["energy_reason"] == "energy measurement disabled (--energy none)"
    page = html.read_text()
    assert "Energy not measured:" in page and "energy measurement disabled (--energy none)" in page
    assert page.count('<figure class="plot"') == 3  # distribution, trace, ops


def test_profile_of_a_bundle_names_its_target(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    bundle = tmp_path / "bundle"
    assert main(["export", str(model), "--target", "x86-cpu", "-o", str(bundle)]) == 0
    result = profile(bundle, iterations=10, warmup=2, energy="none")
    assert result["target"] == "x86-cpu" and result["iterations"] == 10
    report = write_profile_report(result, tmp_path / "b.html")
    assert report.sections[0]["target"] == "x86-cpu"
    assert "x86-cpu" in (tmp_path / "b.html").read_text()


def test_profile_errors_from_the_runtime_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    assert main(["profile", str(bad), "--iterations", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad.onnx" in err


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not on PATH: install Debian's 'chromium' (make chromium)")
def test_real_efficientnet_profile_renders_in_chromium(tmp_path: Path, efficientnet_model: Path) -> None:
    result = profile(efficientnet_model, iterations=30, warmup=5, energy="auto", idle_s=0.5)
    html = tmp_path / "effnet.html"
    write_profile_report(result, html, tmp_path / "effnet.json", target="x86-cpu")
    chromium = find_chromium()
    assert chromium is not None
    page = render_page(html, chromium, ".plot svg, .plot img")
    (tmp_path / "effnet.png").write_bytes(page.screenshot_png)
    assert page.console_errors == [] and page.exceptions == [] and page.failed_requests == []
    assert page.requests == [html.resolve().as_uri()]
    expected = html.read_text().count('<figure class="plot"')
    assert expected >= 3 and len(page.boxes) == expected
    assert all(box["width"] > 200 and box["height"] > 120 for box in page.boxes)


def _orin_nano_rails(root: Path) -> None:
    """The Orin Nano INA3221 hwmon layout (see shared/reference/power-sensors.md) under ``root``."""
    folder = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    folder.mkdir(parents=True)
    (folder.parent.parent / "name").write_text("ina3221\n")
    (folder / "name").write_text("ina3221\n")
    (folder / "update_interval").write_text("20\n")
    for k, (label, mv, ma) in enumerate([("VDD_IN", 5024, 944), ("VDD_CPU_GPU_CV", 5016, 96), ("VDD_SOC", 5016, 288)], 1):
        (folder / f"in{k}_label").write_text(f"{label}\n")
        (folder / f"in{k}_input").write_text(f"{mv}\n")
        (folder / f"curr{k}_input").write_text(f"{ma}\n")


def test_energy_from_a_real_sampler_run_is_reported(tmp_path: Path) -> None:
    from edgeq_runtime.bench import benchmark
    from edgeq_runtime.session import Session

    root = tmp_path / "board"
    _orin_nano_rails(root)
    session = Session(_mlp(tmp_path / "mlp.onnx"))
    try:
        result = benchmark(session, warmup=3, duration=0.4, idle_s=0.3, power_root=root, profile_ops=False)
    finally:
        session.close()
    energy = result.energy
    assert energy.available, energy.reason
    html, doc_path = tmp_path / "e.html", tmp_path / "e.json"
    report = write_profile_report(result, html, doc_path)
    summary = report.sections[0]["summary"]
    assert summary["energy_per_inference_mj"] == pytest.approx(energy.energy_per_inference_mj)
    assert summary["average_power_w"] == pytest.approx(energy.average_power_w)
    page = html.read_text()
    assert f"{energy.energy_per_inference_mj:.3f} mJ" in page and "VDD_IN" in page
    assert page.count('<figure class="plot"') == 3  # distribution, trace, power
    assert "Energy not measured" not in page
