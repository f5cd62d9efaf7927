"""Mixed precision end to end on small graphs: exact bytes, measured sensitivities, the plan, refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.data import load_data
from edgeq.errors import ConfigError
from edgeq.graph.passes.weight_only import plan_targets, read_weight
from edgeq.quantize import QuantizeInputs, quantize
from edgeq.quantize.config import Method, MixedPrecisionConfig
from edgeq.quantize.schemes.mixed.fitting import fit, planned_bytes
from edgeq.quantize.schemes.mixed.probe import WeightProbe
from edgeq.quantize.schemes.mixed.sensitivity import (
    SENSITIVITY_SAMPLES,
    measure_sensitivity,
    plan_matrices,
    sensitivity_batches,
)
from edgeq.quantize.schemes.mixed.writer import METADATA_KEY

VOCAB, HIDDEN, FFN = 40, 64, 96


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def sequence_model(seed: int = 0) -> onnx.ModelProto:
    """Embedding -> MatMul -> Relu -> MatMul (+ residual) -> MatMul, fed ids and a padding mask."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "table"),
        numpy_helper.from_array((rng.standard_normal((HIDDEN, FFN)) / 8).astype(np.float32), "w_up"),
        numpy_helper.from_array((rng.standard_normal((FFN, HIDDEN)) / 10).astype(np.float32), "w_down"),
        numpy_helper.from_array((rng.standard_normal((HIDDEN, HIDDEN)) / 8).astype(np.float32), "w_out"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["h0"], name="embed"),
        helper.make_node("MatMul", ["h0", "w_up"], ["h1"], name="up"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w_down"], ["h3"], name="down"),
        helper.make_node("Add", ["h0", "h3"], ["h4"], name="residual"),
        helper.make_node("MatMul", ["h4", "w_out"], ["hidden"], name="out"),
    ]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    # The mask feeds the graph (as in BERT) so it is a real input: hidden * mask.
    nodes += [
        helper.make_node("Unsqueeze", ["attention_mask", "axis"], ["mask3"], name="mask_unsqueeze"),
        helper.make_node("Cast", ["mask3"], ["maskf"], name="mask_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hidden", "maskf"], ["y"], name="mask_mul"),
    ]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axis"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])]
    return _model(nodes, inputs, outputs, inits)


def token_data(n: int = 24, seq: int = 12, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (n, seq)).astype(np.int64)
    lengths = rng.integers(2, seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def two_branch_model(loud: float = 10.0) -> onnx.ModelProto:
    """y = x @ A + Gemm(x, B^T, alpha=0.5, C): B's weights are ``loud`` times larger."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array((rng.standard_normal((64, 64)) / 8).astype(np.float32), "a"),
        numpy_helper.from_array((loud * rng.standard_normal((64, 64)) / 8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "c"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["ya"], name="quiet"),
        helper.make_node("Gemm", ["x", "b", "c"], ["yb"], name="loud", transB=1, alpha=0.5),
        helper.make_node("Add", ["ya", "yb"], ["y"], name="sum"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        inits,
    )


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _new_initializer_bytes(original: onnx.ModelProto, quantized: onnx.ModelProto) -> int:
    before = {t.name for t in original.graph.initializer}
    return sum(len(t.raw_data) if t.HasField("raw_data") else numpy_helper.to_array(t).nbytes
               for t in quantized.graph.initializer if t.name not in before)


def _plan(model: onnx.ModelProto) -> dict:
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    return json.loads(entry.value)


def _quantize(model: onnx.ModelProto, config: MixedPrecisionConfig, data: dict[str, np.ndarray] | None = None):
    source = load_data(data if data is not None else token_data(), model, batch_size=8)
    return quantize(model, config, QuantizeInputs(data=source, progress=False))


@pytest.fixture(scope="module")
def seq_model() -> onnx.ModelProto:
    return sequence_model()


@pytest.mark.parametrize("avg_bits", [3.5, 6.0])
def test_written_bytes_equal_the_plan_and_fit_the_budget(seq_model: onnx.ModelProto, avg_bits: float) -> None:
    # Block 32 with fp32 scales: int2 costs 3 bits per weight, int4 5, int8 9.
    config = MixedPrecisionConfig(avg_bits=avg_bits, block_size=32)
    result = _quantize(seq_model, config)
    plan = _plan(result.model)
    onnx.checker.check_model(result.model, full_check=True)
    num_weights = VOCAB * HIDDEN + HIDDEN * FFN + FFN * HIDDEN + HIDDEN * HIDDEN
    assert plan["budget_bytes"] == int(avg_bits * num_weights / 8)
    written = _new_initializer_bytes(seq_model, result.model)
    assert written == plan["weight_bytes"] == sum(n["bytes"] for n in plan["nodes"])
    assert written <= plan["budget_bytes"]
    for node in plan["nodes"]:  # what was written is what the allocation was told
        assert node["bytes"] == node["candidates"][node["format"]]["bytes"]
    assert len({n["format"] for n in plan["nodes"]}) > 1, plan  # a real mix at these budgets
    data = token_data(8, seed=9)
    ref, out = _run(seq_model, data), _run(result.model, data)
    assert np.abs(out - ref).max() < 0.5 * np.abs(ref).max()


def test_exact_bytes_per_format_match_the_emitters(seq_model: onnx.ModelProto) -> None:
    """Hand-counted storage: MatMulNBits pads K to whole blocks, fp32 scales; tables store codes unpadded."""
    targets, _ = plan_targets(seq_model, True)
    by_name = {t.name: t for t in targets}
    block = 32
    # up: W^T is [FFN=96, K=64]: 2 blocks per row; down: [64, K=96]: 3 blocks.
    for name, (rows, cols) in {"up": (FFN, HIDDEN), "down": (HIDDEN, FFN)}.items():
        blocks = -(-cols // block)
        for bits in (2, 4, 8):
            expected = rows * blocks * block * bits // 8 + rows * blocks * 4
            assert planned_bytes(by_name[name], f"int{bits}", block) == expected
    table = by_name["embed"]
    assert planned_bytes(table, "int4", block) == VOCAB * HIDDEN // 2 + VOCAB * 2 * 4
    assert planned_bytes(table, "float", block) == VOCAB * HIDDEN * 4


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_measured_sensitivity_matches_an_independent_substitution(seq_model: onnx.ModelProto, method: str) -> None:
    """The weights-as-inputs probe gives the error of a model rebuilt with the quantized initializer
    (and, for GPTQ, an ``Add`` of its bias correction after the MatMul)."""
    config = MixedPrecisionConfig(avg_bits=4.0, block_size=16, candidates=("int2", "int4"), method=Method(method))
    data = token_data()
    source = load_data(data, seq_model, batch_size=8)
    stats = {}
    if method == "gptq":
        from edgeq.quantize.schemes.weight_only.stats import collect_layer_stats

        stats = collect_layer_stats(seq_model, plan_targets(seq_model, True)[0], source, False)
    table = measure_sensitivity(seq_model, config, source, stats, samples=16)
    assert table.samples == 16
    feeds = {k: v[:16] for k, v in data.items()}
    ref = _run(seq_model, feeds).astype(np.float64)
    keep = feeds["attention_mask"].astype(bool)
    for matrix in table.matrices:
        target = matrix.target
        w = read_weight(seq_model, target)
        for fmt in ("int2", "int4"):
            fitted = fit(w, target, fmt, 16, Method(method), stats)
            stored = fitted.effective(w.shape)
            stored = stored.T if target.transpose else stored
            copy = onnx.ModelProto()
            copy.CopyFrom(seq_model)
            for i, tensor in enumerate(copy.graph.initializer):
                if tensor.name == target.weight:
                    copy.graph.initializer[i].CopyFrom(numpy_helper.from_array(stored.astype(np.float32), target.weight))
            if fitted.result.bias is not None and not target.is_embedding:
                node = next(n for n in copy.graph.node if n.name == target.name)
                node.output[0] = "pre_correction"
                copy.graph.node.append(helper.make_node("Add", ["pre_correction", "correction"], [target.output]))
                copy.graph.initializer.append(numpy_helper.from_array(fitted.result.bias.astype(np.float32), "correction"))
                copy = onnx.shape_inference.infer_shapes(copy)  # nodes appended out of order: sort below
                _toposort(copy)
            out = _run(copy, feeds).astype(np.float64)
            expected = np.sum((out - ref)[keep] ** 2) / np.sum(ref[keep] ** 2)
            option = matrix.option(fmt)
            assert option is not None and option.error == pytest.approx(expected, rel=1e-4)
        int2, int4 = matrix.option("int2"), matrix.option("int4")
        assert int2 is not None and int4 is not None and int2.error > int4.error > 0
    if method == "gptq":
        assert any(fit(read_weight(seq_model, m.target), m.target, "int4", 16, Method.GPTQ, stats).result.bias is not None
                   for m in table.matrices)


def _toposort(model: onnx.ModelProto) -> None:
    """Reorder nodes so every input is produced before it is read."""
    nodes = list(model.graph.node)
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    ordered: list[onnx.NodeProto] = []
    while nodes:
        node = next(n for n in nodes if all(x in ready for x in n.input if x))
        nodes.remove(node)
        ordered.append(node)
        ready.update(node.output)
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def test_the_sensitive_matrix_gets_the_bits() -> None:
    """Same shapes, same bytes: the allocation gives the one upgrade to the matrix that matters more."""
    model = two_branch_model(loud=10.0)
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    targets, _ = plan_targets(model, True)
    two = sum(planned_bytes(t, "int2", 32) for t in targets)
    upgrade = planned_bytes(targets[0], "int4", 32) - planned_bytes(targets[0], "int2", 32)
    config = MixedPrecisionConfig(weight_budget_bytes=two + upgrade, block_size=32, candidates=("int2", "int4"))
    result = _quantize(model, config, {"x": x})
    formats = {n["node"]: n["format"] for n in _plan(result.model)["nodes"]}
    assert formats == {"quiet": "int2", "loud": "int4"}
    onnx.checker.check_model(result.model, full_check=True)
    assert _new_initializer_bytes(model, result.model) == two + upgrade
    # Gemm's alpha and bias survive the rewrite; the error is measured on the first samples.
    first = {"x": x[: SENSITIVITY_SAMPLES]}
    ref, out = _run(model, first), _run(result.model, first)
    assert np.sum((out - ref) ** 2) / np.sum(ref**2) == pytest.approx(_plan(result.model)["measured_error"], rel=1e-3)


def test_measured_error_of_the_written_model_is_close_to_the_sum(seq_model: onnx.ModelProto) -> None:
    result = _quantize(seq_model, MixedPrecisionConfig(avg_bits=4.5, block_size=32))
    plan = _plan(result.model)
    # Per-matrix errors add up (cross terms average out): within a factor 1.5 either way here.
    assert plan["predicted_error"] / 1.5 < plan["measured_error"] < plan["predicted_error"] * 1.5
    decisions = {d.name: d for d in result.summary.nodes}
    for node in plan["nodes"]:
        decision = decisions[node["node"]]
        assert decision.quantized and decision.scheme.startswith(node["format"])
        assert decision.error["predicted_output_rel_mse"] == node["predicted_error"]
    assert any("budget counts" in n for n in result.summary.notes)
    assert any("whole model file" in n for n in result.summary.notes)


def test_budget_below_the_minimum_names_the_smallest_size(seq_model: onnx.ModelProto) -> None:
    targets, _ = plan_targets(seq_model, True)
    smallest = sum(planned_bytes(t, "int2", 32) for t in targets)
    with pytest.raises(ConfigError) as info:
        _quantize(seq_model, MixedPrecisionConfig(weight_budget_bytes=smallest - 1, block_size=32))
    message = str(info.value)
    assert "\n" not in message and "smallest achievable size" in message and f"{smallest:,} B" in message
    with pytest.raises(ConfigError, match=r"below the smallest achievable .* bits per weight"):
        _quantize(seq_model, MixedPrecisionConfig(avg_bits=1.0, block_size=32))
    result = _quantize(seq_model, MixedPrecisionConfig(weight_budget_bytes=smallest, block_size=32))
    assert {n["format"] for n in _plan(result.model)["nodes"]} == {"int2"}


def test_a_budget_above_float_size_keeps_everything_at_its_best(seq_model: onnx.ModelProto) -> None:
    config = MixedPrecisionConfig(budget_bytes=10**9, block_size=32, candidates=("int4", "int8"))
    result = _quantize(seq_model, config)
    assert {n["format"] for n in _plan(result.model)["nodes"]} == {"int8"}
    notes = " ".join(result.summary.notes)
    assert "no trade-off was needed" in notes and "float size" in notes
    floats = _quantize(seq_model, MixedPrecisionConfig(budget_bytes=10**9, block_size=32, candidates=("int8", "float")))
    assert {n["format"] for n in _plan(floats.model)["nodes"]} == {"float"}
    assert all(not d.quantized and "kept in float" in d.reason for d in floats.summary.nodes)
    np.testing.assert_array_equal(_run(floats.model, token_data(4)), _run(seq_model, token_data(4)))


def test_nf4_has_no_table_kernel_and_bnb4_handles_ragged_k(seq_model: onnx.ModelProto) -> None:
    config = MixedPrecisionConfig(avg_bits=2.0, block_size=64, candidates=("nf4", "int8"))
    with pytest.raises(ConfigError, match="smallest achievable"):  # the table can only be int8 here
        _quantize(seq_model, config)
    targets, _ = plan_targets(seq_model, True)
    smallest = sum(planned_bytes(t, "int8" if t.is_embedding else "nf4", 64) for t in targets)
    result = _quantize(seq_model, MixedPrecisionConfig(weight_budget_bytes=smallest, block_size=64, candidates=("nf4", "int8")))
    plan = _plan(result.model)
    assert {n["node"]: n["format"] for n in plan["nodes"]} == {"embed": "int8", "up": "nf4", "down": "nf4", "out": "nf4"}
    assert "nf4" not in plan["nodes"][0]["candidates"]
    assert sum(n.op_type == "MatMulBnb4" for n in result.model.graph.node) == 3  # down has K=96: flat blocks
    onnx.checker.check_model(result.model, full_check=True)
    assert _new_initializer_bytes(seq_model, result.model) == smallest
    _run(result.model, token_data(4))


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_data_driven_methods_count_their_extra_tensors(seq_model: onnx.ModelProto, method: str) -> None:
    result = _quantize(seq_model, MixedPrecisionConfig(avg_bits=4.5, block_size=32, method=Method(method)))
    plan = _plan(result.model)
    assert _new_initializer_bytes(seq_model, result.model) == plan["weight_bytes"] <= plan["budget_bytes"]
    methods = {d.method for d in result.summary.nodes if d.quantized}
    assert method in methods and "hqq" in methods  # the table has no activations: hqq
    assert any("+bias correction" in d.scheme for d in result.summary.nodes)
    # The written model's error on the measured samples is what the plan says it is.
    feeds = {k: v[: SENSITIVITY_SAMPLES] for k, v in token_data().items()}
    ref, out = _run(seq_model, feeds).astype(np.float64), _run(result.model, feeds).astype(np.float64)
    keep = feeds["attention_mask"].astype(bool)
    assert np.sum((out - ref)[keep] ** 2) / np.sum(ref[keep] ** 2) == pytest.approx(plan["measured_error"], rel=1e-3)
    if method == "awq":
        assert any(n.op_type == "Mul" and "awq" in n.name for n in result.model.graph.node)
    onnx.checker.check_model(result.model, full_check=True)
    _run(result.model, token_data(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"avg_bits": 3.0, "candidates": ("int3",)}, "unknown format 'int3'"),
        ({"avg_bits": 3.0, "candidates": ("fp16", "int4")}, "use 'float'"),
        ({"avg_bits": 3.0, "candidates": ()}, "at least one format"),
        ({}, "exactly one of --budget"),
        ({"avg_bits": 3.0, "budget_bytes": 100}, "exactly one of --budget"),
        ({"avg_bits": -1.0}, "positive number of bits"),
        ({"budget_bytes": 0}, "positive size"),
        ({"weight_budget_bytes": -5}, "--weight-budget: -5 bytes"),
        ({"budget_bytes": 10, "weight_budget_bytes": 10}, "exactly one of --budget"),
        ({"avg_bits": 3.0, "block_size": 24}, "power of two"),
        ({"avg_bits": 3.0, "method": "best"}, "--method"),
        ({"avg_bits": 3.0, "exclude": "("}, "--exclude"),
    ],
)
def test_bad_options_are_one_line_errors(seq_model: onnx.ModelProto, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _quantize(seq_model, MixedPrecisionConfig(**kwargs))
    assert "\n" not in str(info.value)


def test_needs_data_and_respects_exclude(seq_model: onnx.ModelProto) -> None:
    with pytest.raises(ConfigError, match="pass --data"):
        quantize(seq_model, MixedPrecisionConfig(avg_bits=3.0), QuantizeInputs(progress=False))
    result = _quantize(seq_model, MixedPrecisionConfig(avg_bits=4.0, block_size=32, exclude="^embed$", embeddings=True))
    plan = _plan(result.model)
    assert [n["node"] for n in plan["nodes"]] == ["up", "down", "out"]
    assert plan["budget_bytes"] == int(4.0 * (HIDDEN * FFN * 2 + HIDDEN * HIDDEN) / 8)
    excluded = next(d for d in result.summary.nodes if d.name == "embed")
    assert not excluded.quantized and "excluded" in excluded.reason


def test_cli_budget_and_refusal(tmp_path, seq_model: onnx.ModelProto, capsys) -> None:
    from edgeq.cli import main

    model_path, data_path, out = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "q.onnx"
    onnx.save(seq_model, str(model_path))
    np.savez(data_path, **token_data())  # type: ignore[arg-type]
    code = main(["quantize", str(model_path), "--budget", "16kB", "--candidates", "int2,int4,int8", "--block-size", "16",
                 "--data", str(data_path), "-o", str(out), "--quiet"])
    assert code == 0 and out.is_file()
    plan = _plan(onnx.load(str(out)))
    assert plan["budget_bytes"] == 16_000 and out.stat().st_size <= 16_000
    capsys.readouterr()
    code = main(["quantize", str(model_path), "--budget", "1kB", "--data", str(data_path), "-o", str(tmp_path / "no.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "smallest achievable size" in err and not (tmp_path / "no.onnx").exists()


def test_downstream_runs_equal_whole_model_runs(seq_model: onnx.ModelProto) -> None:
    """Running only the nodes after the substituted matrix measures the same error as the whole model."""
    data = load_data(token_data(), seq_model, batch_size=8)
    batches, mask_name, _ = sensitivity_batches(seq_model, data, 24)
    targets, _, _ = plan_matrices(seq_model, MixedPrecisionConfig(avg_bits=4.0))
    probe = WeightProbe(seq_model, targets, batches, mask_name)
    # The final Mul reads the cast mask, computed upstream of everything; "down" also reads the residual.
    assert probe.cuts[0] == ["maskf"] and set(probe.cuts[-1] or []) == {"h4", "maskf"}
    assert set(probe.cuts[2] or []) == {"h0", "h2", "maskf"}
    for i, target in enumerate(targets):
        w = read_weight(seq_model, target)
        effective = fit(w, target, "int2", 16, Method.RTN, {}).effective(w.shape)
        part, whole = probe.error({i: effective}), probe.error({i: effective}, downstream_only=False)
        assert part == pytest.approx(whole, rel=1e-5) and part > 0
        assert probe._sub is not None and probe._sub[0] == i
