"""Mixed precision on MiniLM: the chosen mix against uniform, rule-based and random mixes of the same size.

Two budgets, both counting the whole written file as ``--budget`` does (the 39 matrices' codes and
fp32 scales, the tensors left in float, the graph and the plan's metadata): (a) the size of the
uniform int4 block 128 file, (b) the file whose matrices average 3 bits per weight. Each contender
gets what the budget leaves after the fixed part (``file_fixed_bytes``), and every
written file is checked against the budget. Every
contender is written as a real ONNX model by the same code (``build_mixed``) and scored by the
mean cosine of its sentence embeddings (masked mean pool) against fp32 on the evaluation
sentences. Random mixes are averaged over seeds. The Hessian proxy ``trace(E H E^T)`` is
compared with the measured sensitivities (Spearman's rho per format) and, as an allocation
criterion, with the measured ones.

    python benchmarks/mixed.py [--cache .cache/examples] [--seeds 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CANDIDATES = ("int2", "int4", "int8")
BLOCK = 128
EVAL_BATCH = 16


@dataclass
class Row:
    budget: str
    contender: str
    nbytes: float
    mean_cos: float
    p5_cos: float
    predicted: float = float("nan")
    runs: int = 1
    note: str = ""
    file_bytes: float = 0.0  # the whole written file, the plan's metadata entry at its reserve


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class Evaluator:
    """Sentence embeddings of the evaluation set, batched by length so little padding is run."""

    def __init__(self, model: onnx.ModelProto, eval_npz: Path, limit: int | None) -> None:
        data = np.load(eval_npz)
        feeds = {k: data[k][:limit] for k in ("input_ids", "attention_mask", "token_type_ids")}
        order = np.argsort(feeds["attention_mask"].sum(axis=1), kind="stable")
        self.batches = []
        for start in range(0, len(order), EVAL_BATCH):
            rows = order[start : start + EVAL_BATCH]
            width = int(feeds["attention_mask"][rows].sum(axis=1).max())
            self.batches.append({k: np.ascontiguousarray(v[rows, :width]) for k, v in feeds.items()})
        self.reference = self.embeddings(model)

    def embeddings(self, model: onnx.ModelProto) -> np.ndarray:
        from edgeq.metrics import masked_mean_pool

        session = _session(model)
        return np.concatenate(
            [masked_mean_pool(session.run(None, b)[0], b["attention_mask"]) for b in self.batches]
        )

    def cosines(self, model: onnx.ModelProto) -> np.ndarray:
        from edgeq.metrics import cosine_rows

        return cosine_rows(self.reference, self.embeddings(model))


def rule_mix(sizes: np.ndarray, formats: Sequence[str], low: str, high: str, order: Sequence[int], budget: int) -> list[str]:
    """Everything ``low``, then ``high`` for each matrix in ``order`` that still fits ("int4 first k").

    A matrix too big to upgrade is skipped rather than ending the walk, so the rule fills the
    budget like the other contenders (MiniLM's word embedding comes first and is half the model).
    """
    lo, hi = formats.index(low), formats.index(high)
    choice = [lo] * len(sizes)
    spent = int(sizes[:, lo].sum())
    for i in order:
        extra = int(sizes[i, hi] - sizes[i, lo])
        if spent + extra <= budget:
            choice[i] = hi
            spent += extra
    return [formats[j] for j in choice]


def random_mix(sizes: np.ndarray, formats: Sequence[str], budget: int, rng: np.random.Generator) -> list[str]:
    """A random assignment that fills the budget: random formats in random order, then random upgrades."""
    n = len(sizes)
    choice = np.zeros(n, int)
    spent = int(sizes[:, 0].sum())
    for i in rng.permutation(n):
        j = int(rng.integers(len(formats)))
        extra = int(sizes[i, j] - sizes[i, choice[i]])
        if spent + extra <= budget:
            choice[i], spent = j, spent + extra
    while True:  # spend what is left on random single-step upgrades that still fit
        moves = [(i, choice[i] + 1) for i in range(n) if choice[i] + 1 < len(formats)
                 and spent + int(sizes[i, choice[i] + 1] - sizes[i, choice[i]]) <= budget]
        if not moves:
            return [formats[j] for j in choice]
        i, j = moves[int(rng.integers(len(moves)))]
        spent += int(sizes[i, j] - sizes[i, choice[i]])
        choice[i] = j


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--seeds", type=int, default=5, help="random mixes per budget (>= 5 for the PASS line)")
    parser.add_argument("--samples", type=int, default=None, help="calibration samples for the sensitivities")
    parser.add_argument("--quick", action="store_true", help="128 evaluation sentences instead of 256")
    args = parser.parse_args()

    from edgeq.data import load_data
    from edgeq.graph.io import load_model
    from edgeq.graph.passes.weight_only import read_weight
    from edgeq.numerics.allocation import allocate, budget_from_avg_bits, format_bytes, spearman
    from edgeq.quantize.config import MixedPrecisionConfig
    from edgeq.quantize.schemes.mixed.filesize import written_bytes
    from edgeq.quantize.schemes.mixed.fitting import Fitted
    from edgeq.quantize.schemes.mixed.scheme import file_fixed_bytes, plan_entry_bytes
    from edgeq.quantize.schemes.mixed.sensitivity import measure_sensitivity, plan_matrices
    from edgeq.quantize.schemes.mixed.writer import build_mixed
    from edgeq.quantize.schemes.weight_only.stats import collect_layer_stats

    model_path = args.cache / "minilm.onnx"
    calib, evals = args.cache / "text_calib.npz", args.cache / "text_eval.npz"
    for path in (model_path, calib, evals):
        if not path.is_file():
            print(f"missing {path}: build the examples first (make demo, or examples/models.py)")
            return 2
    model = load_model(model_path)
    begun = time.perf_counter()
    config = MixedPrecisionConfig(candidates=CANDIDATES, avg_bits=3.0, block_size=BLOCK)
    started = time.perf_counter()
    evaluator = Evaluator(model, evals, 128 if args.quick else None)
    print(f"evaluation: {sum(len(b['input_ids']) for b in evaluator.batches)} sentences ({time.perf_counter() - started:.1f} s for fp32)")

    planned = plan_matrices(model, config)
    targets = planned[0]
    started = time.perf_counter()
    stats = collect_layer_stats(model, targets, load_data(calib, model, samples=128, batch_size=16), progress=False)
    stats_s = time.perf_counter() - started
    data = load_data(calib, model, batch_size=8)
    table = measure_sensitivity(model, config, data, stats={}, samples=args.samples, planned=planned, proxy_stats=stats)
    print(f"sensitivities: {len(table.matrices)} matrices x {len(CANDIDATES)} formats, {table.probe.runs if table.probe else 0} "
          f"runs on {table.samples} calibration samples in {table.seconds:.1f} s (+{stats_s:.1f} s X^T X for the proxy)")

    # -- proxy vs measured --------------------------------------------------------------------------
    # The library's proxy is relative, trace(E H E^T) / trace(W H W^T) (relative weight MSE for
    # tables); the absolute trace(E H E^T) is also shown for the MatMuls.
    print("\nHessian proxy vs measured output error, Spearman's rho across matrices (per format):")
    matmuls = [i for i, m in enumerate(table.matrices) if not m.target.is_embedding]
    energy: dict[int, float] = {}
    for i in matmuls:
        target = table.matrices[i].target
        w = read_weight(model, target).astype(np.float64)
        hessian = stats[target.activation].hessian
        assert hessian is not None
        energy[i] = float(np.sum((w @ hessian) * w))

    def value(i: int, fmt: str, measure: str) -> float:
        option = table.matrices[i].option(fmt)
        assert option is not None
        return float(getattr(option, measure) or 0.0)

    for fmt in CANDIDATES:
        measured = [value(i, fmt, "error") for i in range(len(table.matrices))]
        proxy = [value(i, fmt, "proxy") for i in range(len(table.matrices))]
        rho_all = spearman(measured, proxy)
        rho_mm = spearman([measured[i] for i in matmuls], [proxy[i] for i in matmuls])
        rho_abs = spearman([measured[i] for i in matmuls], [proxy[i] * energy[i] for i in matmuls])
        print(f"  {fmt}: relative proxy, all 39 matrices rho={rho_all:+.3f}, 36 MatMuls rho={rho_mm:+.3f}; "
              f"absolute trace(E H E^T), 36 MatMuls rho={rho_abs:+.3f}")

    formats = list(CANDIDATES)
    sizes = np.array([[value(i, f, "nbytes") for f in formats] for i in range(len(table.matrices))], np.int64)
    fixed, _ = file_fixed_bytes(table, config)
    plan_entry = plan_entry_bytes(table, config)
    fits: dict[tuple[int, str], Fitted] = {}

    def file_size(mix: list[str]) -> int:
        """The file ``edgeq quantize`` writes for ``mix``, its plan's metadata entry counted at its reserve."""
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return written_bytes(build_mixed(copy, table, mix, config, fits=fits).model) + plan_entry

    budgets = {
        "(a) uniform int4 b128 file": file_size(["int4"] * len(table.matrices)),
        "(b) 3.0 bits per weight file": fixed + budget_from_avg_bits(3.0, table.num_weights),
    }
    print(f"\nfixed part of every file: {format_bytes(fixed)} (graph, metadata, tensors left in float, headers, plan)")
    rows: list[Row] = []
    written_ok: list[str] = []

    def score(budget_name: str, contender: str, mix: list[str], note: str = "") -> Row:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        written = build_mixed(copy, table, mix, config, fits=fits)
        cos = evaluator.cosines(written.model)
        predicted = sum(value(i, f, "error") for i, f in enumerate(mix))
        row = Row(budget_name, contender, float(sum(written.nbytes)), float(cos.mean()), float(np.percentile(cos, 5)), predicted, 1, note,
                  written_bytes(written.model) + plan_entry)
        if contender.startswith("mixed (measured"):
            before = {t.name for t in model.graph.initializer}
            new = sum(len(t.raw_data) for t in written.model.graph.initializer if t.name not in before)
            if new == row.nbytes:
                written_ok.append(budget_name)
        return row

    for name, file_budget in budgets.items():
        budget = file_budget - fixed  # what the matrices' stored bytes may take
        chosen = allocate(table.options(), budget)
        mix = [formats[j] for j in chosen.choice]
        proxy_choice = allocate(table.options("proxy"), budget).choice
        proxy_mix = [m.fits[j].format for m, j in zip(table.matrices, proxy_choice, strict=True)]
        counts = ", ".join(f"{mix.count(f)}x{f}" for f in formats if mix.count(f))
        rows.append(score(name, "mixed (measured, default)", mix, f"{counts}; {chosen.solver}"))
        rows.append(score(name, "mixed (Hessian proxy)", proxy_mix))
        fitting = [f for f in formats if int(sizes[:, formats.index(f)].sum()) <= budget]
        best_uniform = max(fitting, key=lambda f: int(sizes[:, formats.index(f)].sum()))
        rows.append(score(name, f"uniform {best_uniform}", [best_uniform] * len(mix)))
        # Simple rules of the same size: int2 everywhere, and the bigger format for the first (or
        # last) matrices in graph order: int8 at the int4 budget, int4 at 3 bits.
        order = list(range(len(mix)))
        high = "int8" if name.startswith("(a)") else "int4"
        for label, walk in (("first", order), ("last", order[::-1])):
            rows.append(score(name, f"rule: {high} {label} k, int2 rest", rule_mix(sizes, formats, "int2", high, walk, budget)))
        randoms = [score(name, "random", random_mix(sizes, formats, budget, np.random.default_rng(seed)))
                   for seed in range(args.seeds)]
        rows.append(Row(name, f"random mixes (mean of {args.seeds} seeds)", float(np.mean([r.nbytes for r in randoms])),
                        float(np.mean([r.mean_cos for r in randoms])), float(np.mean([r.p5_cos for r in randoms])),
                        float(np.mean([r.predicted for r in randoms])), len(randoms),
                        f"best seed {max(r.mean_cos for r in randoms):.5f}, worst {min(r.mean_cos for r in randoms):.5f}",
                        float(max(r.file_bytes for r in randoms))))

    # -- table and verdicts ---------------------------------------------------------------------------
    print(f"\n{'budget':30} {'contender':34} {'file bytes':>12} {'weight bytes':>14} {'bits/w':>7} {'mean cos':>9} {'p5 cos':>8} {'pred. err':>9}  note")
    for row in rows:
        bits = 8 * row.nbytes / table.num_weights
        print(f"{row.budget:30} {row.contender:34} {row.file_bytes:12,.0f} {row.nbytes:14,.0f} {bits:7.3f} {row.mean_cos:9.5f} {row.p5_cos:8.5f} "
              f"{row.predicted:9.4f}  {row.note}")

    failures = 0
    print()
    for name, budget in budgets.items():
        group = [r for r in rows if r.budget == name]
        mixed = group[0]
        within = all(r.file_bytes <= budget for r in group)  # random mixes: their largest file
        print(f"{'PASS' if within else 'FAIL'} {name}: every contender's whole file within the budget {format_bytes(budget)}")
        failures += not within
        written = name in written_ok
        print(f"{'PASS' if written else 'FAIL'} {name}: the written mix's new initializers = predicted bytes ({mixed.nbytes:,.0f})")
        failures += not written
        for other in group[2:]:
            ok = mixed.mean_cos > other.mean_cos
            failures += not ok
            print(f"{'PASS' if ok else 'FAIL'} {name}: mixed {mixed.mean_cos:.5f} > {other.contender} {other.mean_cos:.5f}")
        by_proxy = group[1]
        better = "measured" if mixed.mean_cos >= by_proxy.mean_cos else "proxy"
        print(f"info {name}: measured-sensitivity mix {mixed.mean_cos:.5f} vs Hessian-proxy mix {by_proxy.mean_cos:.5f} ({better} better)")
    if args.seeds < 5:
        print("FAIL random mixes averaged over fewer than 5 seeds")
        failures += 1
    print(f"\n{'PASS' if failures == 0 else 'FAIL'}: {failures} failed checks ({time.perf_counter() - begun:.0f} s in all)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
