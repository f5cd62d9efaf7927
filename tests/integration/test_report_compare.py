"""The comparison report on a real ``edgeq.evaluate.compare_models`` result, checked in Chromium too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq import evaluate
from edgeq.cli import main
from edgeq.report import write_compare_report, write_demo_report
from tests.integration.report_browser_cdp import find_chromium, render_page
from tests.integration.test_report_profile import _mlp


@pytest.fixture(scope="module")
def real_compare(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    folder = tmp_path_factory.mktemp("compare")
    model = _mlp(folder / "mlp.onnx")
    variants = []
    for fmt in ("int4", "int2"):
        out = folder / f"mlp.{fmt}.onnx"
        assert main(["quantize", str(model), "--weights", fmt, "--block-size", "32", "-o", str(out), "--quiet"]) == 0
        variants.append(out)
    data = folder / "eval.npz"
    np.savez(data, x=np.random.default_rng(1).normal(size=(48, 64)).astype(np.float32))
    result = evaluate.compare_models(model, variants, data, samples=48, latency=False)
    return result, folder


def test_real_compare_result_renders_every_variant(real_compare: tuple[object, Path], tmp_path: Path) -> None:
    result, _ = real_compare
    report = write_compare_report(result, tmp_path / "c.html", tmp_path / "c.json")
    html = (tmp_path / "c.html").read_text()
    data = result.to_dict()["_data"]  # type: ignore[attr-defined]
    assert [v["name"] for v in data["variants"]] == ["mlp.int4", "mlp.int2"]
    for variant in data["variants"]:
        assert variant["name"] in html
        assert f"{variant['metrics']['sqnr_db']:.1f} dB" in html
    section = report.sections[0]
    assert section["reference_label"] == "fp32"  # read from the reference's float32 weights
    # int2 is smaller and less accurate than int4: both are on the size front, with fp32.
    metric = section["summary"]["accuracy_metric"]
    by_name = {v["name"]: v for v in data["variants"]}
    assert by_name["mlp.int2"]["file_bytes"] < by_name["mlp.int4"]["file_bytes"]
    assert by_name["mlp.int2"]["metrics"][metric] < by_name["mlp.int4"]["metrics"][metric]
    assert section["summary"]["pareto_front"]["size"] == ["fp32", "mlp.int4", "mlp.int2"]
    assert "No latency measured for these models" in html  # latency=False
    assert html.count('<figure class="plot"') == 1
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["_data"]["sections"][0]["compare"]["_data"]["variants"][0]["metrics"] == pytest.approx(
        data["variants"][0]["metrics"]
    )


@pytest.mark.browser
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not on PATH: install Debian's 'chromium' (make chromium)")
def test_demo_page_from_saved_results_renders_in_chromium(real_compare: tuple[object, Path], tmp_path: Path) -> None:
    result, _ = real_compare
    saved = tmp_path / "compare.json"
    result.save(saved)  # type: ignore[attr-defined]
    html = write_demo_report([saved], [], tmp_path / "demo.html")
    chromium = find_chromium()
    assert chromium is not None
    page = render_page(html, chromium, ".plot svg, .plot img")
    (tmp_path / "demo.png").write_bytes(page.screenshot_png)
    assert page.console_errors == [] and page.exceptions == [] and page.failed_requests == []
    assert page.requests == [html.resolve().as_uri()]
    assert len(page.boxes) == 1 and page.boxes[0]["width"] > 200 and page.boxes[0]["height"] > 120
