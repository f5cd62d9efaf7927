"""Weight-only 4/2-bit quantization of a real decoder (SmolLM2-135M): edgeq against onnxruntime, one run.

For each configuration: perplexity on held-out ``pydoc_data.topics`` prose (teacher forcing
through the KV-cache graph, ``edgeq.evaluate.compare_models`` in decoder mode), its increase over
fp32, greedy agreement with fp32 (4 prompts x 16 new tokens), file size vs fp32, KV-cache bytes
per token (``edgeq.graph.decoder.describe_decoder``), prefill ms for a 128-token prompt and decode
ms per token after it (onnxruntime CPU, 2 threads, every optimization on, all rows timed in
interleaved rounds, warm-up excluded, median), quantize wall time and peak memory (RSS growth of
the process while quantizing, sampled from /proc), and the decode speed as a fraction of the
memory-bandwidth limit (every weight byte read once per token).

onnxruntime's ``MatMulNBitsQuantizer`` quantizes MatMuls with an initializer weight only: the
tied LM head (``MatMul(x, Transpose(table))``) and the embedding table stay float there. edgeq
quantizes the tied table once, at int8 by default under a 4/2-bit body ("head+table int8");
rows marked "table float" keep it float like onnxruntime does, for a like-for-like comparison.
edgeq's GPTQ/AWQ rows calibrate on 32 windows of 256 tokens of ``pydoc_data.topics`` prose that
excludes the held-out topics (``examples.smollm2.calibration_text``), given as a ``.txt`` the
way a user passes ``--data``; the statistics are collected once and reused by later rows.

The fp32 model is the GGUF's Q4_1 checkpoint dequantized (``examples/smollm2.py``): its
matrices lie on an asymmetric 4-bit block-32 grid, so that case can reproduce them almost
exactly and is marked "source grid".

    python benchmarks/decoder.py [--cache .cache/examples] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Prose paragraphs perplexity is measured on; examples.smollm2.calibration_text leaves them out.
HELDOUT_TOPICS = ("execmodel", "specialnames")
SEQ_LEN = 256
CHUNK = 128
PROMPTS = 4
PROMPT_TOKENS = 32
NEW_TOKENS = 16
PREFILL_TOKENS = 128
THREADS = 2
QUALITY_GROUP = 6  # candidates compared per reference pass (bounds memory)
BANDWIDTH_BYTES = 1 << 30
CALIB_SEQUENCES = 32  # windows of 256 tokens of calibration prose for GPTQ/AWQ (8192 tokens)


@dataclass
class Row:
    tool: str
    config: str
    bits: int
    block: int
    case: str = ""
    path: str = ""
    quantize_s: float = float("nan")
    peak_mb: float = float("nan")  # RSS growth while quantizing, above the process's RSS before
    perplexity: float = float("nan")
    ppl_increase: float = float("nan")
    greedy: float = float("nan")
    size_ratio: float = float("nan")
    file_mb: float = float("nan")
    kv_bytes: int | None = None
    prefill_ms: float = float("nan")
    decode_ms: float = float("nan")
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.path) and not self.note.startswith(("failed", "does not run", "skipped"))


def _short(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:90]


def _case(bits: int, block: int, symmetric: bool, table_float: bool) -> str:
    case = "source-grid case (Q4_1)" if (bits == 4 and block == 32 and not symmetric) else ""
    if table_float:
        case = f"{case}, table float" if case else "table float"
    return case


# -- data -------------------------------------------------------------------------------------


def heldout_tokens(tokenizer_path: Path, sequences: int) -> np.ndarray:
    """[sequences, SEQ_LEN] int64: consecutive windows of the held-out prose, tokenized."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer

    from edgeq.data.tokens import windows
    from examples.datasets import _prose_paragraphs

    text = "\n\n".join(p for t in HELDOUT_TOPICS for p in _prose_paragraphs(topics[t]))
    stream = np.asarray(Tokenizer.from_file(str(tokenizer_path)).encode(text).ids, np.int64)
    ids = windows(stream, SEQ_LEN)
    if ids.shape[0] < sequences:
        raise SystemExit(f"held-out text has {ids.shape[0]} windows of {SEQ_LEN} tokens, need {sequences}")
    return ids[:sequences]


def memory_bandwidth() -> tuple[float, str]:
    """Bytes/s: the best of numpy ``sum`` (1 GiB read) and ``copyto`` (1 GiB read + 1 GiB written)."""
    a = np.ones(BANDWIDTH_BYTES // 8, np.float64)
    b = np.empty_like(a)
    np.copyto(b, a)
    reads, copies = [], []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        reads.append(BANDWIDTH_BYTES / (time.perf_counter() - t))
        t = time.perf_counter()
        np.copyto(b, a)
        copies.append(2 * BANDWIDTH_BYTES / (time.perf_counter() - t))
    read, copy = max(reads), max(copies)
    how = (f"numpy, one thread, 1 GiB float64 array, best of 5: sum (read) {read / 1e9:.1f} GB/s, "
           f"copyto (read + write) {copy / 1e9:.1f} GB/s; the limit uses the larger")
    return max(read, copy), how


def source_grid(src: Path) -> str:
    """Does the fp32 model lie on Q4_1's grid (per 32-block min + scale * q, q in 0..15, float offset)?"""
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits)
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)  # [K, N]; Q4_1 blocks run along K
    blocks = w.T.reshape(w.shape[1], -1, 32)
    low, high = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    step = np.where(high > low, (high - low) / 15, 1.0)
    regrid = np.round((blocks - low) / step) * step + low
    error = float(np.sqrt(((regrid - blocks) ** 2).mean() / (blocks**2).mean()))
    return (f"source grid: {node.name}'s fp32 weight re-gridded to per-32-block min/max with a FLOAT offset has relative "
            f"RMS error {error:.1e} (it is Q4_1 exactly); MatMulNBits files from both tools store integer (uint4) zero "
            f"points, so the offset rounds to a whole step and no row below reproduces the grid")


# -- quantizers -------------------------------------------------------------------------------


# GPTQ/AWQ statistics of the float model on the calibration prose, collected by the first
# data-driven row and reused by the others (QuantizeInputs.layer_stats); that row's quantize time
# includes the collection, the others' do not (the table says which).
SHARED_STATS: dict[str, Any] = {}


def run_edgeq(
    src: Path, work: Path, weights: str, block: int, method: str, symmetric: bool, table_float: bool = False,
    lm_head: str | None = None, calib: Path | None = None,
) -> Row:
    from edgeq.quantize.api import quantize_file
    from edgeq.quantize.config import WeightOnlyConfig

    bits = {"int2": 2, "int8": 8}.get(weights, 4)
    extra: dict[str, Any] = {"embeddings": False, "lm_head": "float"} if table_float else {"lm_head": lm_head}
    config = WeightOnlyConfig(weights=weights, block_size=block, method=method, symmetric=symmetric, **extra)  # type: ignore[arg-type]
    head = "" if table_float or config.head_weights is None else f", head+table {config.head_weights.value}"
    label = f"{weights} {'sym' if symmetric else 'asym'} {method}{head}"
    row = Row("edgeq", label, bits, block, _case(bits, block, symmetric, table_float))
    out = work / f"edgeq_{weights}_{block}_{method}_{int(symmetric)}_{int(table_float)}_{lm_head}.onnx"
    data = calib if method in ("gptq", "awq") else None
    try:
        start = time.perf_counter()
        result = quantize_file(src, config, out, data=data, samples=CALIB_SEQUENCES if data else None, batch_size=4,
                               progress=False, layer_stats=SHARED_STATS if data else None)
        row.quantize_s = time.perf_counter() - start
        if data is not None:  # collected by this row (time included), or reused
            row.note = next(n for n in result.summary.notes if n.startswith("calibration statistics"))
    except Exception as exc:  # a configuration failing is a row in the table, not a crash
        row.note = f"failed: {_short(exc)}"
        return row
    row.path = str(out)
    return row


def calibration_file(work: Path) -> Path:
    """The calibration prose (``examples.smollm2.calibration_text``: no held-out topic) as a .txt;
    edgeq reads it with the tokenizer beside the model, as a user's ``--data heldout.txt``."""
    from examples.smollm2 import calibration_text

    path = work / "calibration.txt"
    path.write_text(calibration_text(), encoding="utf-8")
    return path


ORT_LABELS = {"DEFAULT": "DEFAULT", "RTN": "RTN", "HQQ": "HQQ", "k_quant": "k_quant", "NF4": "nf4 (MatMulBnb4Quantizer)"}


def run_ort(src: Path, work: Path, algorithm: str, bits: int, block: int, symmetric: bool) -> Row:
    from benchmarks.ort_weight_only import quantize_with_onnxruntime

    sym = "sym" if symmetric else "asym"
    label = f"int{bits} {sym} {ORT_LABELS[algorithm]}" if algorithm != "NF4" else ORT_LABELS[algorithm]
    row = Row("onnxruntime", label, bits, block, _case(bits, block, symmetric, True))
    out = work / f"ort_{algorithm}_{bits}_{block}_{int(symmetric)}.onnx"
    start = time.perf_counter()
    try:
        quantized = quantize_with_onnxruntime(onnx.load(str(src)), algorithm, bits, block, symmetric)
        onnx.save_model(quantized, str(out))
    except Exception as exc:
        row.note = f"failed: {_short(exc)}"
        return row
    row.quantize_s = time.perf_counter() - start
    row.path = str(out)
    return row


class PeakRSS:
    """Peak resident memory of this process while the block runs, above what it held before (MB):
    the same gauge for both tools, sampled every 10 ms from /proc (onnxruntime's allocations too)."""

    def __enter__(self) -> PeakRSS:
        import threading

        self.before = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1e6


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def skipped(tool: str, config: str, bits: int, block: int, reason: str) -> Callable[[], Row]:
    return lambda: Row(tool, config, bits, block, note=f"skipped: {reason}")


# -- quality ----------------------------------------------------------------------------------


def measure_quality(reference: Path, rows: list[Row], tokens: np.ndarray, float_bytes: int) -> tuple[float, int | None]:
    """Fill perplexity, greedy agreement, size and KV bytes; returns (fp32 perplexity, fp32 KV bytes)."""
    from edgeq.evaluate import DecoderOptions, compare_models

    options = DecoderOptions(chunk=CHUNK, prompts=PROMPTS, prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS,
                             seq_len=SEQ_LEN, batch_size=PROMPTS)
    ref_ppl, ref_kv = float("nan"), None
    runnable = [r for r in rows if r.ok]
    for lo in range(0, len(runnable), QUALITY_GROUP):
        group = runnable[lo : lo + QUALITY_GROUP]
        try:
            result: Any = compare_models(reference, [r.path for r in group], tokens, layers=False, latency=False, decoder=options)
        except Exception:  # one bad graph must not hide the others: retry them one by one
            if len(group) == 1:
                group[0].note = f"does not run: {_short(sys.exc_info()[1])}"  # type: ignore[arg-type]
                continue
            for row in group:
                measure_quality(reference, [row], tokens, float_bytes)
            continue
        ref_ppl, ref_kv = result.reference_perplexity, result.reference_kv_bytes_per_token
        for row, variant in zip(group, result.variants, strict=True):
            row.perplexity = variant.metrics["perplexity"]
            row.ppl_increase = row.perplexity - ref_ppl
            row.greedy = variant.metrics["greedy_agreement"]
            row.kv_bytes = result.kv_bytes_per_token.get(variant.name)
            print(f"  quality {row.tool} {row.config} block {row.block}: perplexity {row.perplexity:.3f}", file=sys.stderr, flush=True)
    for row in rows:
        if row.path:
            size = Path(row.path).stat().st_size
            row.file_mb, row.size_ratio = size / 1e6, size / float_bytes
    return ref_ppl, ref_kv


# -- speed ------------------------------------------------------------------------------------


class Timer:
    """One optimized session: a 128-token prefill and a 1-token decode step after it."""

    def __init__(self, path: str, prompt: np.ndarray) -> None:
        from edgeq.evaluate.kv_cache import kv_layout
        from edgeq.graph.session import cpu_session

        layout = kv_layout(onnx.load(path, load_external_data=False))
        assert layout is not None, path
        self.session = cpu_session(path, purpose=path, threads=THREADS)
        names = {i.name for i in self.session.get_inputs()}
        n = prompt.size
        empty = np.zeros((1, layout.kv_heads, 0, layout.head_size), layout.dtype)
        self.prefill = {"input_ids": prompt[None], "attention_mask": np.ones((1, n), np.int64)}
        if "position_ids" in names:
            self.prefill["position_ids"] = np.arange(n, dtype=np.int64)[None]
        self.cache_names = [f"past_key_values.{i}.{k}" for i in range(layout.layers) for k in ("key", "value")]
        self.prefill.update({name: empty for name in self.cache_names})
        outputs = self.session.run(None, self.prefill)
        out_names = [o.name for o in self.session.get_outputs()]
        values = dict(zip(out_names, outputs, strict=True))
        token = np.asarray([[int(values["logits"][0, -1].argmax())]], np.int64)
        self.decode = {"input_ids": token, "attention_mask": np.ones((1, n + 1), np.int64)}
        if "position_ids" in names:
            self.decode["position_ids"] = np.asarray([[n]], np.int64)
        self.decode.update({name: values[name.replace("past_key_values", "present")] for name in self.cache_names})
        self.prefill_times: list[float] = []
        self.decode_times: list[float] = []

    def round(self, decode_steps: int) -> None:
        t = time.perf_counter()
        self.session.run(["logits"], self.prefill)
        self.prefill_times.append((time.perf_counter() - t) * 1e3)
        for _ in range(decode_steps):
            t = time.perf_counter()
            self.session.run(None, self.decode)
            self.decode_times.append((time.perf_counter() - t) * 1e3)


def measure_speed(float_path: Path, rows: list[Row], prompt: np.ndarray, rounds: int, decode_steps: int) -> tuple[float, float]:
    """Prefill and decode medians for every row, interleaved round by round; returns fp32's."""
    paths = [str(float_path)] + [r.path for r in rows if r.ok]
    timers: dict[str, Timer] = {}
    for path in paths:
        try:
            timers[path] = Timer(path, prompt)
        except Exception as exc:
            for row in rows:
                if row.path == path:
                    row.note = f"does not run: {_short(exc)}"
    for timer in timers.values():  # warm-up, not recorded
        timer.round(2)
        timer.prefill_times.clear()
        timer.decode_times.clear()
    for i in range(rounds):
        for timer in timers.values():
            timer.round(decode_steps)
        print(f"  speed round {i + 1}/{rounds}", file=sys.stderr, flush=True)
    for row in rows:
        if row.path in timers:
            row.prefill_ms = float(np.median(timers[row.path].prefill_times))
            row.decode_ms = float(np.median(timers[row.path].decode_times))
    fp32 = timers[str(float_path)]
    return float(np.median(fp32.prefill_times)), float(np.median(fp32.decode_times))


# -- report -----------------------------------------------------------------------------------


def limit_tps(file_bytes: float, bandwidth: float) -> float:
    return bandwidth / file_bytes


def print_table(rows: list[Row], fp32: Row, bandwidth: float) -> None:
    header = (f"{'tool':<12} {'config':<34} {'bits':>4} {'block':>5} {'ppl':>8} {'+ppl':>7} {'greedy':>6} {'MB':>6} {'size':>5} "
              f"{'KV B/tok':>8} {'prefill':>8} {'dec ms':>6} {'tok/s':>6} {'limit':>6} {'frac':>5} {'quant s':>7} {'peak MB':>7}  case / note")
    print(header)
    print("-" * len(header))
    for r in [fp32, *rows]:
        tps = 1e3 / r.decode_ms if np.isfinite(r.decode_ms) else float("nan")
        limit = limit_tps(r.file_mb * 1e6, bandwidth) if np.isfinite(r.file_mb) else float("nan")
        kv = f"{r.kv_bytes:,}" if r.kv_bytes is not None else "?"
        extra = "; ".join(x for x in (r.case, r.note) if x)
        print(f"{r.tool:<12} {r.config:<34} {r.bits:>4} {r.block:>5} {r.perplexity:>8.3f} {r.ppl_increase:>7.3f} {r.greedy:>6.3f} "
              f"{r.file_mb:>6.1f} {r.size_ratio:>5.3f} {kv:>8} {r.prefill_ms:>8.1f} {r.decode_ms:>6.2f} {tps:>6.1f} {limit:>6.1f} "
              f"{tps / limit:>5.2f} {r.quantize_s:>7.1f} {r.peak_mb:>7.0f}  {extra}")


def best(rows: list[Row], tool: str, bits: int, block: int | None = None, key: str = "ppl_increase", table_float: bool | None = None) -> Row | None:
    chosen = [
        r for r in rows
        if r.tool == tool and r.bits == bits and (block is None or r.block == block) and np.isfinite(getattr(r, key))
        and (table_float is None or ("table float" in r.case) == table_float)
    ]
    return min(chosen, key=lambda r: getattr(r, key)) if chosen else None


def verdict(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")


def checks(rows: list[Row], fp32: Row) -> None:
    for bits, block in ((4, 128), (2, 64)):
        theirs = best(rows, "onnxruntime", bits, block)
        for table_float, what in ((False, "table quantized"), (True, "table float, like onnxruntime")):
            ours = best(rows, "edgeq", bits, block, table_float=table_float)
            if ours and theirs:
                ratio = ours.ppl_increase / theirs.ppl_increase if theirs.ppl_increase > 0 else float("inf")
                verdict(f"{bits}-bit block {block} perplexity increase <= 0.5x onnxruntime's best (edgeq {what})", ratio <= 0.5,
                        f"edgeq {ours.config} +{ours.ppl_increase:.3f} vs onnxruntime {theirs.config} +{theirs.ppl_increase:.3f} -> {ratio:.2f}x")
            elif ours or theirs:
                verdict(f"{bits}-bit block {block} perplexity increase <= 0.5x onnxruntime's best (edgeq {what})", False,
                        "a side has no measured row at this bits/block")
    two = best(rows, "edgeq", 2, 64, table_float=False)
    if two:
        ratio = two.perplexity / fp32.perplexity
        verdict("2-bit block 64 perplexity <= 3x fp32's", ratio <= 3.0,
                f"edgeq {two.config} {two.perplexity:.3f} vs fp32 {fp32.perplexity:.3f} -> {ratio:.2f}x")
    small = best(rows, "edgeq", 4, None, key="size_ratio", table_float=False)
    if small:
        verdict("4-bit file <= 0.2x fp32", small.size_ratio <= 0.2,
                f"edgeq {small.config} block {small.block}: {small.file_mb:.1f} MB = {small.size_ratio:.3f}x of {fp32.file_mb:.1f} MB")
    ours4 = best(rows, "edgeq", 4, None, key="decode_ms", table_float=False)
    theirs4 = best(rows, "onnxruntime", 4, None, key="decode_ms")
    if ours4 and theirs4:
        verdict("decode ms/token at 4-bit <= onnxruntime's fastest 4-bit", ours4.decode_ms <= theirs4.decode_ms,
                f"edgeq {ours4.config} block {ours4.block} {ours4.decode_ms:.2f} ms vs onnxruntime {theirs4.config} block "
                f"{theirs4.block} {theirs4.decode_ms:.2f} ms -> {ours4.decode_ms / theirs4.decode_ms:.2f}x")
    if ours4:
        verdict("decode ms/token at 4-bit < fp32", ours4.decode_ms < fp32.decode_ms,
                f"edgeq {ours4.decode_ms:.2f} ms vs fp32 {fp32.decode_ms:.2f} ms -> {ours4.decode_ms / fp32.decode_ms:.2f}x")


# -- plan -------------------------------------------------------------------------------------


def plan(src: Path, work: Path, quick: bool, calib: Path) -> list[Callable[[], Row]]:
    runs: list[Callable[[], Row]] = []
    blocks4, blocks2 = ((32, 128), (64,)) if quick else ((32, 64, 128), (32, 64))
    gptq_reason = ("onnxruntime's GPTQ needs a calibration reader over the KV-cache inputs and runs the whole model per "
                   "sample per MatMul input; 118 s for 32 samples on 22M-parameter MiniLM, far over a few minutes here")
    edgeq = partial(run_edgeq, src, work)
    for block in blocks4:
        if quick and block == 32:  # the source-grid case and the command a user types with no method options
            runs.append(partial(run_ort, src, work, "DEFAULT", 4, 32, False))
            runs.append(partial(edgeq, "int4", 32, "rtn", True))
            runs.append(partial(edgeq, "int4", 32, "rtn", False))
            continue
        for symmetric in (True, False):
            runs.append(partial(run_ort, src, work, "DEFAULT", 4, block, symmetric))
        runs.append(partial(run_ort, src, work, "HQQ", 4, block, False))
        runs.append(partial(run_ort, src, work, "RTN", 4, block, False))
        runs.append(partial(run_ort, src, work, "k_quant", 4, block, False))
        runs.append(partial(run_ort, src, work, "NF4", 4, block, True))
        runs.append(skipped("onnxruntime", "int4 GPTQ", 4, block, gptq_reason))
        for symmetric in (False, True):
            runs.append(partial(edgeq, "int4", block, "rtn", symmetric))
            runs.append(partial(edgeq, "int4", block, "gptq", symmetric, calib=calib))
        if not quick:
            runs.append(partial(edgeq, "int4", block, "hqq", False))
            runs.append(partial(edgeq, "int4", block, "awq", False, calib=calib))
            runs.append(partial(edgeq, "nf4", block, "rtn", True))
        runs.append(partial(edgeq, "int4", block, "gptq", False, True, calib=calib))
    for block in blocks2:
        for symmetric in (True, False):
            runs.append(partial(run_ort, src, work, "DEFAULT", 2, block, symmetric))
        runs.append(partial(run_ort, src, work, "HQQ", 2, block, False))
        for symmetric in (False, True):
            runs.append(partial(edgeq, "int2", block, "rtn", symmetric))
            runs.append(partial(edgeq, "int2", block, "gptq", symmetric, calib=calib))
        runs.append(partial(edgeq, "int2", block, "gptq", False, True, calib=calib))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--quick", action="store_true", help="Only the target cells (4-bit block 128, 2-bit block 64) and the source-grid case.")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    from examples.smollm2 import SMOLLM2_FILE, TOKENIZER_FILE, build_smollm2

    src = args.cache / SMOLLM2_FILE
    if not (src.is_file() and (args.cache / TOKENIZER_FILE).is_file()):
        src = build_smollm2(args.cache)  # a 5-minute export; reused from the cache when present
    float_bytes = src.stat().st_size
    sequences = 4 if args.quick else 8
    tokens = heldout_tokens(args.cache / TOKENIZER_FILE, sequences)
    bandwidth, bandwidth_how = memory_bandwidth()
    grid = source_grid(src)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-decoder-bench-") as tmp:
        work = Path(tmp)
        for run in plan(src, work, args.quick, calibration_file(work)):
            with PeakRSS() as memory:
                row = run()
            row.peak_mb = memory.growth_mb
            rows.append(row)
            print(f"  quantized {row.tool} {row.config} block {row.block}: {row.quantize_s:.1f} s {row.note}", file=sys.stderr, flush=True)
        fp32 = Row("fp32", "float32 (Q4_1 GGUF dequantized)", 32, 0, path=str(src), file_mb=float_bytes / 1e6, size_ratio=1.0)
        fp32.perplexity, fp32.kv_bytes = measure_quality(src, rows, tokens, float_bytes)
        fp32.ppl_increase, fp32.greedy = 0.0, 1.0
        prompt = tokens.reshape(-1)[:PREFILL_TOKENS].copy()
        fp32.prefill_ms, fp32.decode_ms = measure_speed(src, rows, prompt, rounds=5 if args.quick else 7, decode_steps=5)

    print()
    print(f"SmolLM2-135M-Instruct ({float_bytes / 1e6:.1f} MB fp32); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; onnxruntime {__import__('onnxruntime').__version__}")
    print(f"quality: {tokens.shape[0]} sequences x {SEQ_LEN} tokens of pydoc_data.topics {', '.join(HELDOUT_TOPICS)} prose "
          f"(chunks of {CHUNK}); greedy: {PROMPTS} prompts of {PROMPT_TOKENS} tokens + {NEW_TOKENS} new")
    print(f"speed: onnxruntime CPU, {THREADS} threads, all optimizations; prefill = {PREFILL_TOKENS}-token prompt, decode = "
          f"one token after it; median over interleaved rounds, warm-up excluded")
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s ({bandwidth_how})")
    print(grid)
    print("limit = decode tokens/s if every byte of the file is read once per token at that bandwidth; frac = measured / limit")
    print()
    print_table(rows, fp32, bandwidth)
    print()
    checks(rows, fp32)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
