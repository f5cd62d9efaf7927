"""``edgeq-run bench`` on a decoder bundle: per-token statistics with warm-up excluded, prefill per
prompt length, memory and KV bytes, energy per generated and per prompt token from a sensor tree
with known power, and the HTML report's generation block."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from edgeq_runtime import BundleError, Session
from edgeq_runtime.bench import BenchmarkResult, benchmark, format_result
from edgeq_runtime.cli import main as run_main
from edgeq_runtime.stats import latency_stats

from tests.unit import decoder_graphs
from tests.unit.decoder_bundles import bundle, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
import sysfs_boards as boards

IDLE_W = 5.024 * 0.944  # the Orin Nano fixture's VDD_IN: 5024 mV x 944 mA, constant


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    model = save(decoder_graphs.tiny_decoder(decoder_graphs.random_weights()), root / "tiny")
    return bundle(model, root / "bundle", context_length=128)


def test_decoder_benchmark_record(tiny_bundle: Path):
    with Session(tiny_bundle) as session:
        result = benchmark(session, warmup=5, iterations=70, energy="none",
                           decoder_options={"prompt_lengths": [8, 32], "prefill_runs": 2})
    decoder = result.decoder
    assert decoder is not None
    assert result.iterations == 70 and result.warmup_iterations == 5 and len(result.trace_ms) == 75
    assert result.latency_ms == latency_stats(result.trace_ms[5:])  # warm-up steps excluded
    assert decoder["tokens_per_s"] == pytest.approx(70 / (sum(result.trace_ms[5:]) / 1000))
    assert result.throughput_per_s == decoder["tokens_per_s"]
    assert list(decoder["prefill_ms"]) == ["8", "32"] and decoder["prefill_runs"] == 2
    assert decoder["ttft_ms"] == {k: v["p50"] for k, v in decoder["prefill_ms"].items()}
    assert decoder["kv_bytes_per_token"] == 64 and decoder["kv_bytes"] == 64 * (8 + 5 + 70)
    assert decoder["peak_rss_bytes"] > 10_000_000
    if sys.platform.startswith("linux"):  # read at token 64 (of 76), from /proc/self/statm
        assert list(decoder["rss_bytes"]) == ["64"] and decoder["rss_bytes"]["64"] > 10_000_000
    assert decoder["energy_per_generated_token_mj"] is None and not result.energy.available
    text = format_result(result)
    assert "prefill ms 8 tokens" in text and "tokens/s" in text and "per token" in text
    assert BenchmarkResult.from_json(result.to_json()).to_dict() == result.to_dict()


def test_energy_per_token_from_a_constant_power_sensor(tiny_bundle: Path, tmp_path: Path):
    boards.orin_nano(tmp_path / "board")
    with Session(tiny_bundle) as session:
        result = benchmark(session, warmup=3, iterations=30, idle_s=0.05, power_root=tmp_path / "board",
                           decoder_options={"prompt_lengths": [4, 16], "prefill_runs": 2})
    energy, decoder = result.energy, result.decoder
    assert energy.available and decoder is not None and energy.window_s is not None
    assert energy.average_power_w == pytest.approx(IDLE_W, rel=1e-12)
    assert decoder["energy_per_generated_token_mj"] == pytest.approx(IDLE_W * energy.window_s * 1000 / 30, rel=1e-9)
    assert decoder["energy_above_idle_per_generated_token_mj"] == pytest.approx(0, abs=1e-9)
    prompt_tokens = (4 + 16) * 3  # 2 timed runs + 1 warm-up per length
    assert decoder["energy_per_prompt_token_mj"] > 0 and prompt_tokens == 60
    from edgeq.report import write_profile_report
    from edgeq.report.generation_html import token_times

    data = result.to_dict()
    times = token_times(data)
    assert times is not None and len(times) == 30 and energy.measured_window_s is not None
    assert energy.measured_window_s[0] < times[0] and times[-1] == pytest.approx(
        energy.measured_window_s[0] + sum(result.trace_ms[3:]) / 1000)
    html = tmp_path / "report.html"
    write_profile_report(data, html, None)
    assert "Ticks: the 30 measured tokens" in html.read_text()


def test_decoder_bench_refusals(tiny_bundle: Path):
    with Session(tiny_bundle) as session:
        for kwargs, message in [
            ({"iterations": 200}, "more than the context of 128; lower --iterations"),
            ({"duration": 1.0}, "--duration does not apply to a decoder bundle"),
            ({"decoder_options": {"prompt_lengths": [200]}}, "200 tokens do not fit the context of 128"),
        ]:
            with pytest.raises(BundleError, match=message.replace("(", r"\(")):
                benchmark(session, **{"warmup": 2, "energy": "none", **kwargs})


def test_cli_bench_and_profile_report(tiny_bundle: Path, tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    assert run_main(["bench", str(tiny_bundle), "--warmup", "2", "--iterations", "20", "--energy", "none",
                     "--prompt-lengths", "4,8", "--json", str(out)]) == 0
    assert "prefill ms 4 tokens" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema_version"] == 2 and list(data["decoder"]["prefill_ms"]) == ["4", "8"]
    from edgeq.report import write_profile_report

    html = tmp_path / "report.html"
    write_profile_report(data, html, None)
    page = html.read_text()
    assert "<h3>Generation</h3>" in page and "Prefill against prompt length" in page
    assert "time to first token, 4 tokens" in page and "tokens/s" in page
