"""Profiling and comparison reports: content, JSON twin, escaping, Pareto fronts, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import ConfigError
from edgeq.report import (
    REPORT_SCHEMA,
    Report,
    ReportSection,
    load_report,
    write_compare_report,
    write_profile_report,
    write_report,
)
from edgeq.report.analysis import headline_metric, latency_drift_percent, pareto_front
from edgeq.report.inputs import normalize_compare
from tests.report_samples import benchmark_dict, classification_compare, embedding_compare

SVG_NS = "{http://www.w3.org/2000/svg}"


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, flags=re.S)


def _assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    # Every src/href points inside the page (#...) or is inline data; no CSS import or remote url().
    for attr, value in re.findall(r'\b(src|href|xlink:href)\s*=\s*"([^"]*)"', html):
        assert value.startswith(("#", "data:")), f"{attr}={value!r} would load something"
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?(?!#|data:)", html), "url() pointing outside the page"
    assert "Content-Security-Policy" in html


def _assert_plots_have_size(html: str, expected: int) -> None:
    figures = re.findall(r'<figure class="plot" id="([^"]+)">', html)
    assert len(figures) == expected, figures
    svgs = _svgs(html)
    assert len(svgs) == expected
    for svg in svgs:
        root = ET.fromstring(svg)  # well-formed XML, so the browser parses it as we wrote it
        assert root.tag == f"{SVG_NS}svg"
        _, _, width, height = (float(v) for v in root.attrib["viewBox"].split())
        assert width > 100 and height > 100
        assert len(root.findall(f".//{SVG_NS}text")) >= 4  # axis labels and ticks are real text


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, dict]:
    """One page with every kind of section, rendered once for the tests that only read it."""
    out = tmp_path_factory.mktemp("demo")
    report = write_report(
        [
            ReportSection(benchmark_dict(), target="jetson-orin-nano"),
            ReportSection(classification_compare(), reference_label="fp32"),
            ReportSection(embedding_compare(), reference_label="fp32"),
        ],
        out / "r.html",
        out / "r.json",
    )
    return report, (out / "r.html").read_text(), json.loads((out / "r.json").read_text())


def test_page_is_self_contained_with_every_plot_drawn(demo_page: tuple[Report, str, dict]) -> None:
    _, html, _ = demo_page
    _assert_self_contained(html)
    # profile: distribution, trace, ops, power; each comparison: accuracy vs size and vs latency
    _assert_plots_have_size(html, 8)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate element ids across plots"
    for ref in set(re.findall(r'href="#([^"]+)"', html)):
        assert ref in ids, f"dangling reference #{ref}"


def test_profile_report_shows_latency_ops_and_energy(demo_page: tuple[Report, str, dict]) -> None:
    report, html, _ = demo_page
    bench = benchmark_dict()
    lat = bench["latency_ms"]
    for key in ("p50", "p90", "p99", "max"):
        value = lat[key]
        shown = f"{value:.1f}" if value >= 10 else f"{value:.2f}"  # three significant digits
        assert f"<td>{shown}</td>" in html, key
    energy = bench["energy"]
    assert f"{energy['energy_per_inference_mj']:.2f}" in html
    assert f"{energy['energy_above_idle_per_inference_mj']:.2f}" in html
    for text in ("jetson-orin-nano", "15W (nvpmodel 0)", "GPU 625 MHz (max 1,020 MHz); memory 2,133 MHz; CPU 730–1,510 MHz (6 cores)", "tensorrt 10.3.0", "warm-up", "measured window"):
        assert text in html, text
    # The slowest op is listed first in the table.
    first_row = re.search(r"<th>share</th></tr></thead><tbody><tr><td[^>]*>(.*?)</td>", html)
    assert first_row and first_row.group(1).replace("<wbr>", "") == "/features/features.0/Conv"
    assert report.sections[0]["summary"]["latency_p50_ms"] == lat["p50"]


def test_energy_unavailable_shows_reason_and_no_number(tmp_path: Path) -> None:
    bench = benchmark_dict(energy=False, ops=False)
    write_profile_report(bench, tmp_path / "r.html", tmp_path / "r.json")
    html = (tmp_path / "r.html").read_text()
    reason = bench["energy"]["reason"]
    assert "Energy not measured:" in html and reason in html
    assert "mJ" not in html and " W<" not in html
    _assert_plots_have_size(html, 2)  # latency distribution and trace; no power plot
    doc = json.loads((tmp_path / "r.json").read_text())
    summary = doc["_data"]["sections"][0]["summary"]
    assert summary["energy_per_inference_mj"] is None
    assert summary["energy_reason"] == reason


def test_missing_energy_section_is_reported_as_not_measured(tmp_path: Path) -> None:
    bench = benchmark_dict(energy=False, ops=False)
    del bench["energy"]
    write_profile_report(bench, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "Energy not measured:" in html and "no energy section" in html


def test_json_twin_carries_the_same_numbers_and_reloads(tmp_path: Path) -> None:
    bench = benchmark_dict(energy=False, ops=False)
    compare = embedding_compare()
    write_report(
        [bench, ReportSection(compare, title="MiniLM", reference_label="fp32")],
        tmp_path / "r.html",
        tmp_path / "r.json",
        title="two sections",
    )
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["_type"] == REPORT_SCHEMA == "edgeq.Report" and doc["_version"] == 1
    profile, comp = doc["_data"]["sections"]
    assert profile["kind"] == "profile" and comp["kind"] == "compare"
    assert profile["benchmark"]["latency_ms"] == pytest.approx(bench["latency_ms"])
    assert profile["benchmark"]["trace_ms"] == pytest.approx(bench["trace_ms"])
    assert comp["compare"]["_type"] == "edgeq.CompareResult"
    variants = comp["compare"]["_data"]["variants"]
    assert [v["name"] for v in variants] == ["int4", "int2", "nf4"]
    assert variants[1]["metrics"] == compare["_data"]["variants"][1]["metrics"]
    assert comp["summary"]["accuracy_metric"] == "embedding_cosine_mean"
    # Re-rendering the loaded document gives the same page body (only the clock differs).
    loaded = load_report(tmp_path / "r.json")
    assert isinstance(loaded, Report) and loaded.title == "two sections"
    write_report(loaded, tmp_path / "again.html")
    assert (tmp_path / "again.html").read_text() == (tmp_path / "r.html").read_text()


def test_compare_report_table_and_pareto_fronts(demo_page: tuple[Report, str, dict]) -> None:
    report, html, doc = demo_page
    assert "95.3%" in html and "22.4 dB" in html and "0.99520" in html
    assert "1.70×" in html  # int8 speed-up 31.2 / 18.4
    assert "0.27×" in html  # int8 size ratio
    assert "Energy not measured:" in html and "x86 without readable RAPL" in html
    classification, embedding = (s["summary"] for s in report.sections[1:])
    assert [s["summary"] for s in doc["_data"]["sections"][1:]] == [classification, embedding]
    assert classification["accuracy_metric"] == "top1_agreement"
    assert classification["pareto_front"] == {"size": ["fp32", "int8"], "latency": ["fp32", "int8"]}
    # int4 and nf4 trade size for accuracy, int2 is smallest, fp32 most accurate: all on the size front;
    # on latency fp32 is both fastest and exact, so it alone is on the front.
    assert embedding["pareto_front"] == {"size": ["fp32", "int4", "int2", "nf4"], "latency": ["fp32"]}
    # Worst layers appear worst first.
    worst = sorted(classification_compare()["_data"]["variants"][0]["layers"], key=lambda x: x["sqnr_db"])[0]
    assert worst["tensor"].split("/")[-1] in html
    assert f"{worst['sqnr_db']:.1f} dB" in html


def test_compare_energy_numbers_appear_when_measured(tmp_path: Path) -> None:
    write_compare_report(embedding_compare(energy=True), tmp_path / "c.html")
    html = (tmp_path / "c.html").read_text()
    assert "energy / inference" in html and "375.25 mJ" in html  # 47.5 ms × 7.9
    assert "Energy not measured" not in html


def test_text_from_results_is_escaped(tmp_path: Path) -> None:
    bench = benchmark_dict(model='<script>alert("m")</script>.onnx', energy=False)
    bench["ops"][0]["name"] = "<img src=x onerror=alert(1)>"
    compare = classification_compare()
    variant = compare["_data"]["variants"][0]
    variant["name"] = "int$8$ <b>bold</b>"  # '$' must not turn into mathtext in the plots
    variant["layers"][0]["tensor"] = "</td><script>x</script>"
    write_report([bench, compare], tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    _assert_self_contained(html)
    assert "<b>bold</b>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;m&quot;)&lt;/script&gt;.onnx" in html
    assert "int$8$ &lt;b&gt;bold&lt;/b&gt;" in html
    for svg in _svgs(html):
        ET.fromstring(svg)  # still well-formed with the hostile names inside


def test_output_is_reproducible(tmp_path: Path) -> None:
    sections = [benchmark_dict(energy=False, ops=False)]
    write_report(sections, tmp_path / "a.html")
    write_report(sections, tmp_path / "b.html")
    a = (tmp_path / "a.html").read_text()
    b = (tmp_path / "b.html").read_text()
    strip_clock = re.compile(r"generated [^<]*<")
    assert strip_clock.sub("", a) == strip_clock.sub("", b)


def test_long_trace_is_summarised_not_drawn_point_by_point(tmp_path: Path) -> None:
    bench = benchmark_dict(iterations=20000, energy=False, ops=False)
    write_profile_report(bench, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    _assert_plots_have_size(html, 2)
    assert len(html) < 400_000
    assert "min–max per bucket" in html


def test_missing_latency_for_variants_omits_points_not_the_page(tmp_path: Path) -> None:
    compare = embedding_compare()
    compare["_data"]["reference_latency_ms"] = None
    for variant in compare["_data"]["variants"]:
        variant["latency_ms"] = None
    report = write_compare_report(compare, tmp_path / "c.html")
    html = (tmp_path / "c.html").read_text()
    assert "No latency measured for these models" in html
    _assert_plots_have_size(html, 1)
    assert report.sections[0]["summary"]["pareto_front"]["latency"] == []


def test_infinite_sqnr_is_shown_and_written_as_null(tmp_path: Path) -> None:
    compare = classification_compare()
    compare["_data"]["variants"][0]["metrics"]["sqnr_db"] = float("inf")
    write_compare_report(compare, tmp_path / "c.html", tmp_path / "c.json")
    assert "<td>∞</td>" in (tmp_path / "c.html").read_text()
    text = (tmp_path / "c.json").read_text()
    assert "Infinity" not in text
    doc = json.loads(text)
    assert doc["_data"]["sections"][0]["compare"]["_data"]["variants"][0]["metrics"]["sqnr_db"] is None


def test_accepts_result_objects_with_to_dict(tmp_path: Path) -> None:
    class FakeResult:
        def __init__(self, data: dict) -> None:
            self.data = data

        def to_dict(self) -> dict:
            return self.data

    report = write_report(
        [FakeResult(benchmark_dict(energy=False, ops=False)), FakeResult(classification_compare())], None, tmp_path / "r.json"
    )
    assert [s["kind"] for s in report.sections] == ["profile", "compare"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.pop("latency_ms"), "missing field 'latency_ms'"),
        (lambda b: b.update(schema_version=7), "schema version 7 is newer"),
        (lambda b: b.update(schema="something.Else"), "expected schema"),
        (lambda b: b.update(trace_ms="fast"), "trace_ms: expected a list of numbers"),
        (lambda b: b["energy"]["trace"]["power_w"].pop(), "energy.trace has"),
        (lambda b: b["ops"].append({"name": "x"}), "missing field 'total_ms'"),
    ],
)
def test_bad_benchmark_input_is_one_line_error_and_leaves_files(tmp_path: Path, mutate, message: str) -> None:
    out = tmp_path / "r.html"
    out.write_text("previous report")
    bench = benchmark_dict()
    mutate(bench)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        write_profile_report(bench, out, tmp_path / "r.json")
    assert "\n" not in str(info.value)
    assert out.read_text() == "previous report"
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["_data"].pop("variants"), "missing field 'variants'"),
        (lambda c: c.update(_type="edgeq.Other"), "expected a edgeq.CompareResult document"),
        (lambda c: c.update(_version=2), "schema version 2 is newer"),
        (lambda c: c["_data"]["variants"][0].pop("metrics"), "variant 'int8': missing field 'metrics'"),
    ],
)
def test_bad_compare_input_is_one_line_error(tmp_path: Path, mutate, message: str) -> None:
    compare = classification_compare()
    mutate(compare)
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_compare_report(compare, tmp_path / "c.html")
    assert not (tmp_path / "c.html").exists()


def test_unknown_section_and_bad_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a BenchmarkResult or CompareResult"):
        write_report([{"hello": 1}], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="no sections"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="cannot overwrite the HTML report"):
        write_profile_report(benchmark_dict(), tmp_path / "r.html", tmp_path / "r.html")
    with pytest.raises(ConfigError, match="is a directory"):
        write_profile_report(benchmark_dict(), tmp_path)
    with pytest.raises(ConfigError, match="give an HTML path, a JSON path, or both"):
        write_profile_report(benchmark_dict(), None)


def test_json_only_output(tmp_path: Path) -> None:
    write_profile_report(benchmark_dict(energy=False), None, tmp_path / "only.json")
    assert json.loads((tmp_path / "only.json").read_text())["_type"] == "edgeq.Report"
    assert list(tmp_path.iterdir()) == [tmp_path / "only.json"]


def test_pareto_front_matches_its_definition() -> None:
    assert pareto_front([(1, 0.5), (2, 0.9), (3, 0.8), (2, 0.9), (0.5, 0.1)]) == [True, True, False, True, True]
    rng = np.random.default_rng(0)
    for _ in range(50):
        points = [tuple(p) for p in rng.integers(0, 6, size=(rng.integers(1, 12), 2)).astype(float)]
        flags = pareto_front(points)
        front = [p for p, f in zip(points, flags, strict=True) if f]
        assert front, "a non-empty set always has a front"
        for p, on_front in zip(points, flags, strict=True):
            beaten_by = [q for q in points if q[0] <= p[0] and q[1] >= p[1] and q != p]
            assert on_front == (not beaten_by)
            if not on_front:  # every dominated point is beaten by a point on the front
                assert any(q[0] <= p[0] and q[1] >= p[1] for q in front)


def test_latency_drift_measures_last_against_first_tenth() -> None:
    warm = [50.0] * 5
    steady = [10.0] * 100
    assert latency_drift_percent(warm + steady, 5) == pytest.approx(0.0)
    rising = list(np.linspace(10.0, 11.0, 100))
    drift = latency_drift_percent(warm + rising, 5)
    expected = 100 * (np.median(rising[-10:]) - np.median(rising[:10])) / np.median(rising[:10])
    assert drift == pytest.approx(expected)
    assert latency_drift_percent([1.0] * 10, 0) is None


def test_headline_metric_falls_back_to_cosine() -> None:
    compare = normalize_compare(classification_compare())
    assert headline_metric(compare) == "top1_agreement"
    del compare["variants"][0]["metrics"]["top1_agreement"]
    assert headline_metric(compare) == "cosine"


def test_importing_report_package_does_not_load_matplotlib() -> None:
    code = "import sys, edgeq.report, edgeq.cli; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_profile_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeq.cli import main

    assert main(["profile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.onnx" in err and err.count("\n") == 1
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not onnx")
    assert main(["profile", str(model), "--energy", "sometimes"]) == 2
    assert "--energy" in capsys.readouterr().err
    assert main(["profile", str(model), "--iterations", "5", "--duration", "1"]) == 2
    assert "alternatives" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _tiny_onnx(path: Path, dtype: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    np_dtype = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}[dtype]
    weight = onnx.numpy_helper.from_array(np.ones((4, 4), dtype=np_dtype), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", dtype, [1, 4])],
        [helper.make_tensor_value_info("y", dtype, [1, 4])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_reference_label_comes_from_the_reference_weights(tmp_path: Path) -> None:
    from edgeq.report.document import compare_section

    compare = classification_compare()
    compare["_data"]["reference"] = str(_tiny_onnx(tmp_path / "ref16.onnx", 10))  # FLOAT16
    assert compare_section(compare)["reference_label"] == "fp16"
    compare["_data"]["reference"] = str(_tiny_onnx(tmp_path / "ref32.onnx", 1))  # FLOAT
    section = compare_section(compare)
    assert section["reference_label"] == "fp32" and "fp32" in section["summary"]["pareto_front"]["size"]
    compare["_data"]["reference"] = str(tmp_path / "moved-away.onnx")
    assert compare_section(compare)["reference_label"] == "reference"
    assert compare_section(compare, reference_label="float")["reference_label"] == "float"


def test_demo_report_reads_result_files_and_earlier_reports(tmp_path: Path) -> None:
    from edgeq.report import write_demo_report

    compare_file = tmp_path / "compare.json"
    compare_file.write_text(json.dumps(classification_compare()))
    bench_file = tmp_path / "bench.json"
    bench_file.write_text(json.dumps(benchmark_dict(energy=False, ops=False, model="raw.onnx")))
    earlier = tmp_path / "profile.json"
    write_profile_report(benchmark_dict(energy=False, ops=False, model="bundle/model.onnx"), None, earlier, target="orin")
    out = write_demo_report([compare_file], [earlier, bench_file], tmp_path / "demo.html", tmp_path / "demo.json")
    assert out == tmp_path / "demo.html"
    doc = json.loads((tmp_path / "demo.json").read_text())
    sections = doc["_data"]["sections"]
    assert [s["kind"] for s in sections] == ["compare", "profile", "profile"]
    assert sections[1]["target"] == "orin" and sections[1]["benchmark"]["model"] == "bundle/model.onnx"
    assert sections[2]["benchmark"]["model"] == "raw.onnx"
    html = out.read_text()
    assert html.count('<section class="report-section') == 3 and "edgeq demo" in html
    with pytest.raises(ConfigError, match=re.escape("missing.json: file not found")):
        write_demo_report([tmp_path / "missing.json"], [], tmp_path / "x.html")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape("broken.json: not a readable JSON result")):
        write_demo_report([tmp_path / "broken.json"], [], tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_degenerate_results_still_render(tmp_path: Path) -> None:
    one = benchmark_dict(iterations=1, warmup=0, energy=False, ops=False)
    flat = benchmark_dict(iterations=30, warmup=2, energy=False, ops=False)
    flat["trace_ms"] = [5.0] * 32  # identical latencies: zero spread on every axis
    empty = benchmark_dict(energy=False, ops=False)
    empty["trace_ms"], empty["warmup_iterations"] = [], 0
    no_variants = embedding_compare()
    no_variants["_data"]["variants"] = []
    write_report([one, flat, empty, no_variants], tmp_path / "r.html", tmp_path / "r.json")
    html = (tmp_path / "r.html").read_text()
    _assert_self_contained(html)
    assert "No per-iteration trace in this result" in html
    for svg in _svgs(html):
        ET.fromstring(svg)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["_data"]["sections"][0]["summary"]["latency_drift_percent"] is None
    assert doc["_data"]["sections"][3]["summary"]["pareto_front"]["size"] == ["reference"]


def test_json_summary_keys_are_the_documented_ones(demo_page: tuple[Report, str, dict]) -> None:
    import edgeq.report

    _, _, doc = demo_page
    profile_summary, compare_summary = doc["_data"]["sections"][0]["summary"], doc["_data"]["sections"][1]["summary"]
    documented = edgeq.report.__doc__ or ""
    for key in [*profile_summary, *compare_summary, *compare_summary["pareto_front"]]:
        assert f'"{key}"' in documented, key


def test_number_formatting() -> None:
    from edgeq.report.formatting import fmt_bytes, fmt_metric, fmt_ms, fmt_number

    assert fmt_number(-0.0001, 3, "mJ") == "0.000 mJ"
    assert fmt_number(-0.25, 2) == "-0.25"
    assert fmt_number(float("nan")) == fmt_number(None) == "—"
    assert [fmt_ms(v) for v in (0.01234, 1.234, 12.34, 1234.5)] == ["0.012", "1.23", "12.3", "1,234"]
    assert [fmt_bytes(v) for v in (512, 5_100_000, 90_400_000, 2.5e9)] == ["512 B", "5.10 MB", "90.4 MB", "2.50 GB"]
    assert fmt_metric("top1_agreement", 0.953) == "95.3%"
    assert fmt_metric("sqnr_db", float("inf")) == "∞"
    assert fmt_metric("kl_divergence", 0.00012) == "1.20e-04"
