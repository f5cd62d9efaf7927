"""The weight-only scheme on small graphs: every format runs in onnxruntime and computes the numpy reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.data import load_data
from edgeq.errors import ConfigError, UnsupportedError
from edgeq.numerics.codecs import get_codec
from edgeq.numerics.weight_only.rtn import rtn
from edgeq.quantize.api import QuantizeInputs, quantize
from edgeq.quantize.config import WeightOnlyConfig

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((64, 40)).astype(np.float32)
W2 = RNG.standard_normal((40, 24)).astype(np.float32) * 0.2
TABLE = RNG.standard_normal((100, 64)).astype(np.float32)
BIAS = RNG.standard_normal(40).astype(np.float32)


def _encoder_like() -> onnx.ModelProto:
    """ids -> Gather(table) -> MatMul(W1) -> Add(b) -> Relu -> MatMul(W2); plus a MatMul of two activations."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "W1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "W2"], ["y0"], name="fc2"),
        helper.make_node("Transpose", ["emb"], ["embT"], perm=[0, 2, 1], name="t"),
        helper.make_node("MatMul", ["emb", "embT"], ["scores"], name="self_scores"),
    ]
    graph = helper.make_graph(
        nodes,
        "enc",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [
            helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["batch", "seq", 24]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "seq", "seq"]),
        ],
        [numpy_helper.from_array(TABLE, "table"), numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(BIAS, "b1"), numpy_helper.from_array(W2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _gemm(trans_b: bool, alpha: float, beta: float) -> tuple[onnx.ModelProto, np.ndarray]:
    weight = RNG.standard_normal((32, 64) if trans_b else (64, 32)).astype(np.float32)
    c = RNG.standard_normal(32).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="gemm", transB=int(trans_b), alpha=alpha, beta=beta)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        [numpy_helper.from_array(weight, "B"), numpy_helper.from_array(c, "C")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    w_kn = weight.T if trans_b else weight
    return model, w_kn


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = False) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _deq(
    weights: str, symmetric: bool, block: int, w_kn: np.ndarray, flat: bool = False, positive: bool = False
) -> np.ndarray:
    """The numpy reference: RTN of ``w_kn`` [K, N] as the scheme quantizes it, back as [K, N].

    ``positive``: the standard DequantizeLinear form (``--format qdq``) keeps scales above zero.
    """
    codec = get_codec(weights, symmetric, positive_scales=positive)
    w = np.ascontiguousarray(w_kn.T)
    q = rtn(codec, w.reshape(1, -1) if flat else w, block).quantized
    return q.dequantize().reshape(w.shape).T


def _reference(ids: np.ndarray, table: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    emb = table[ids].astype(np.float64)
    return np.maximum(emb @ w1 + BIAS, 0) @ w2


IDS = RNG.integers(0, 100, (2, 7)).astype(np.int64)

CASES = [
    ("int8", True, "matmulnbits"),
    ("int4", True, "matmulnbits"),
    ("int4", False, "matmulnbits"),
    ("int2", False, "matmulnbits"),
    ("int4", True, "qdq"),
    ("int4", False, "qdq"),
    ("int2", False, "qdq"),
    ("nf4", True, "bnb4"),
    ("fp4", True, "bnb4"),
]


@pytest.mark.parametrize(("weights", "symmetric", "fmt"), CASES)
def test_every_format_computes_the_numpy_reference(weights: str, symmetric: bool, fmt: str) -> None:
    model = _encoder_like()
    config = WeightOnlyConfig(weights=weights, symmetric=symmetric, onnx_format=fmt, block_size=16, method="rtn")  # type: ignore[arg-type]
    result = quantize(model, config, QuantizeInputs(progress=False))
    onnx.checker.check_model(result.model, full_check=True)
    table_codec = weights if weights.startswith("int") else "int4"
    # 2-bit DQ->MatMul with K (40) not a multiple of the block is refused: onnxruntime computes it wrongly.
    fc2_refused = weights == "int2" and fmt == "qdq"
    positive = fmt == "qdq"
    expected = _reference(
        IDS,
        _deq(table_codec, symmetric, 16, TABLE.T, positive=positive).T,
        _deq(weights, symmetric, 16, W1, positive=positive),
        W2 if fc2_refused else _deq(weights, symmetric, 16, W2, flat=fmt == "bnb4" and 40 % 16 != 0, positive=positive),
    )
    got = _run(result.model, {"ids": IDS})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # The float weights are gone and the file shrank.
    names = {t.name for t in result.model.graph.initializer}
    assert not names & {"W1", "table"} and ("W2" in names) == fc2_refused
    assert result.summary.weight_bytes_after < 0.5 * result.summary.weight_bytes_before
    assert result.model.ByteSize() < 0.5 * model.ByteSize()
    # The summary covers every node of a quantizable type, with reasons for the float ones.
    decisions = {d.name: d for d in result.summary.nodes}
    assert decisions["fc1"].quantized and decisions["embed"].quantized
    assert decisions["fc2"].quantized != fc2_refused
    if fc2_refused:
        assert "onnxruntime" in decisions["fc2"].reason and "matmulnbits" in decisions["fc2"].reason
    assert decisions["fc1"].block_size == 16 and decisions["fc1"].error["weight_sqnr_db"] > 5
    assert not decisions["self_scores"].quantized and "not an initializer" in decisions["self_scores"].reason
    if fmt == "qdq":
        assert max(o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx")) == (25 if weights == "int2" else 21)
    # onnxruntime's default optimisations still give the same result within int8-activation noise.
    optimized = _run(result.model, {"ids": IDS}, optimize=True)[0]
    assert np.abs(optimized - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("fmt", ["matmulnbits", "qdq", "bnb4"])
@pytest.mark.parametrize(("trans_b", "alpha", "beta"), [(True, 1.0, 1.0), (False, 0.5, 2.0), (True, 2.0, 0.0)])
def test_gemm_with_transposed_weights_alpha_beta_and_bias(fmt: str, trans_b: bool, alpha: float, beta: float) -> None:
    model, w_kn = _gemm(trans_b, alpha, beta)
    weights = "nf4" if fmt == "bnb4" else "int4"
    result = quantize(model, WeightOnlyConfig(weights=weights, onnx_format=fmt, block_size=32), QuantizeInputs(progress=False))  # type: ignore[arg-type]
    onnx.checker.check_model(result.model, full_check=True)
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    c = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "C"))
    expected = x.astype(np.float64) @ _deq(weights, True, 32, w_kn * alpha, positive=fmt == "qdq") + beta * c
    np.testing.assert_allclose(_run(result.model, {"x": x})[0], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert "B" not in {t.name for t in result.model.graph.initializer}


def test_no_embeddings_and_exclude_leave_nodes_in_float_with_reasons() -> None:
    config = WeightOnlyConfig(weights="int4", embeddings=False, exclude="fc2")  # type: ignore[arg-type]
    result = quantize(_encoder_like(), config, QuantizeInputs(progress=False))
    decisions = {d.name: d for d in result.summary.nodes}
    assert not decisions["embed"].quantized and "--no-embeddings" in decisions["embed"].reason
    assert not decisions["fc2"].quantized and "--exclude" in decisions["fc2"].reason
    assert decisions["fc1"].quantized
    names = {t.name for t in result.model.graph.initializer}
    assert {"table", "W2"} <= names and "W1" not in names
    expected = _reference(IDS, TABLE, _deq("int4", True, 32, W1), W2)
    np.testing.assert_allclose(_run(result.model, {"ids": IDS})[0], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (WeightOnlyConfig(weights="nf4", onnx_format="matmulnbits"), UnsupportedError, "bnb4"),  # type: ignore[arg-type]
        (WeightOnlyConfig(weights="int4", onnx_format="bnb4"), UnsupportedError, "nf4"),  # type: ignore[arg-type]
        (WeightOnlyConfig(weights="int4", method="gptq"), ConfigError, "--data"),  # type: ignore[arg-type]
        (WeightOnlyConfig(weights="int4", onnx_format="qdq", accuracy_level=4), ConfigError, "accuracy-level"),  # type: ignore[arg-type]
    ],
)
def test_refusals_are_one_line_errors(config: WeightOnlyConfig, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as caught:
        quantize(_encoder_like(), config, QuantizeInputs(progress=False))
    assert "\n" not in str(caught.value)


def _calibration(model: onnx.ModelProto, samples: int = 48) -> object:
    ids = np.random.default_rng(9).integers(0, 100, (samples, 7)).astype(np.int64)
    return load_data({"ids": ids}, model, batch_size=16)


@pytest.mark.parametrize("method", ["gptq", "awq"])
@pytest.mark.parametrize("weights", ["int4", "int2"])
def test_data_driven_methods_beat_rtn_end_to_end(method: str, weights: str) -> None:
    model = _encoder_like()
    data = _calibration(model)
    base = WeightOnlyConfig(weights=weights, symmetric=False, embeddings=False, block_size=16)  # type: ignore[arg-type]
    rtn_result = quantize(model, base, QuantizeInputs(progress=False))
    config = WeightOnlyConfig(weights=weights, symmetric=False, embeddings=False, block_size=16, method=method)  # type: ignore[arg-type]
    result = quantize(model, config, QuantizeInputs(data=data, progress=False))
    onnx.checker.check_model(result.model, full_check=True)
    ids = np.random.default_rng(9).integers(0, 100, (48, 7)).astype(np.int64)
    reference = _run(model, {"ids": ids})[0]
    err = np.sum((_run(result.model, {"ids": ids})[0] - reference) ** 2)
    err_rtn = np.sum((_run(rtn_result.model, {"ids": ids})[0] - reference) ** 2)
    assert err <= err_rtn * 1.05
    fc1 = next(d for d in result.summary.nodes if d.name == "fc1")
    assert fc1.method == method and "output_rel_mse" in fc1.error
    if method == "awq" and "+input scale" in fc1.scheme:
        assert any(n.op_type == "Mul" for n in result.model.graph.node)


def test_no_quantizable_weights_is_a_note_not_an_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    result = quantize(helper.make_model(graph), WeightOnlyConfig(), QuantizeInputs(progress=False))
    assert result.summary.notes and not result.summary.nodes


def _layernorm_block(residual: bool) -> onnx.ModelProto:
    """x -> LayerNorm -> {MatMul q, MatMul k} (+ a residual Add reading the LayerNorm output)."""
    rng = np.random.default_rng(11)
    gamma = (1 + rng.random(64)).astype(np.float32)
    beta = rng.standard_normal(64).astype(np.float32) * 0.1
    wq = rng.standard_normal((64, 32)).astype(np.float32)
    wk = rng.standard_normal((64, 32)).astype(np.float32)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "Wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["ln", "Wk"], ["k"], name="k_proj"),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 7, 32]) for n in ("q", "k")]
    if residual:
        nodes.append(helper.make_node("Add", ["ln", "x"], ["res"], name="residual"))
        outputs.append(helper.make_tensor_value_info("res", TensorProto.FLOAT, ["b", 7, 64]))
    graph = helper.make_graph(
        nodes, "ln_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 7, 64])], outputs,
        [numpy_helper.from_array(a, n) for a, n in ((gamma, "gamma"), (beta, "beta"), (wq, "Wq"), (wk, "Wk"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("residual", [False, True])
def test_awq_scales_fold_into_layernorm_or_become_one_shared_mul(residual: bool) -> None:
    model = _layernorm_block(residual)
    x = (np.random.default_rng(12).standard_normal((32, 7, 64)) * np.exp(np.random.default_rng(13).standard_normal(64))).astype(np.float32)
    data = load_data({"x": x}, model, batch_size=8)
    config = WeightOnlyConfig(weights="int2", symmetric=False, block_size=16, method="awq")  # type: ignore[arg-type]
    result = quantize(model, config, QuantizeInputs(data=data, progress=False))
    onnx.checker.check_model(result.model, full_check=True)
    muls = [n for n in result.model.graph.node if n.op_type == "Mul"]
    scaled = [d for d in result.summary.nodes if "+input scale" in d.scheme]
    assert len(scaled) == 2  # loud channels: AWQ scales both projections, with one shared vector
    if residual:
        assert len(muls) == 1  # Q and K share one Mul; the residual keeps the unscaled tensor
    else:
        assert not muls and any("folded" in n for n in result.summary.notes)
    reference = _run(model, {"x": x[:4]})
    got = _run(result.model, {"x": x[:4]})
    if residual:
        np.testing.assert_allclose(got[2], reference[2], rtol=1e-5, atol=1e-5)  # untouched path
    rtn_model = quantize(model, WeightOnlyConfig(weights="int2", symmetric=False, block_size=16), QuantizeInputs(progress=False)).model  # type: ignore[arg-type]
    rtn_out = _run(rtn_model, {"x": x[:4]})
    for i in (0, 1):
        assert np.sum((got[i] - reference[i]) ** 2) <= np.sum((rtn_out[i] - reference[i]) ** 2) * 1.05


@pytest.mark.parametrize(("weights", "fmt"), [("int4", "matmulnbits"), ("int8", "matmulnbits"), ("int4", "qdq"), ("nf4", "bnb4")])
def test_float16_models_keep_float16_scales(weights: str, fmt: str) -> None:
    rng = np.random.default_rng(14)
    w = rng.standard_normal((64, 32)).astype(np.float16)
    table = rng.standard_normal((50, 64)).astype(np.float16)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["T", "ids"], ["e"], name="emb"), helper.make_node("MatMul", ["e", "W"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3, 32])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(table, "T")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = quantize(model, WeightOnlyConfig(weights=weights, onnx_format=fmt), QuantizeInputs(progress=False))  # type: ignore[arg-type]
    onnx.checker.check_model(result.model, full_check=True)
    scales = [t for t in result.model.graph.initializer if "scale" in t.name or "absmax" in t.name]
    assert scales and all(t.data_type == TensorProto.FLOAT16 for t in scales)
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    got = _run(result.model, {"ids": ids})[0].astype(np.float32)
    table_codec = "int4" if weights == "nf4" else weights
    positive = fmt == "qdq"
    expected = _deq(table_codec, True, 32, table.astype(np.float32).T, positive=positive).T[ids] @ _deq(
        weights, True, 32, w.astype(np.float32), positive=positive
    )
    np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2 * np.abs(expected).max())


def test_layer_statistics_leave_padding_tokens_out() -> None:
    """X^T X, mean and mean |x| are over the tokens the mask keeps, whatever the batching."""
    from edgeq.graph.passes.weight_only import plan_targets
    from edgeq.quantize.schemes.weight_only.stats import collect_layer_stats

    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"], name="embed"), helper.make_node("MatMul", ["emb", "W1"], ["y"], name="fc1")]
    graph = helper.make_graph(
        nodes, "masked",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 40])],
        [numpy_helper.from_array(TABLE, "table"), numpy_helper.from_array(W1, "W1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(15)
    ids = rng.integers(0, 100, (20, 12)).astype(np.int64)
    mask = (np.arange(12)[None, :] < rng.integers(1, 13, 20)[:, None]).astype(np.int64)
    targets, _ = plan_targets(model, include_embeddings=False)
    rows = TABLE[ids][mask.astype(bool)].astype(np.float64)
    for batch_size in (3, 20):
        data = load_data({"input_ids": ids, "attention_mask": mask}, model, batch_size=batch_size)
        stats = collect_layer_stats(model, targets, data, progress=False)["emb"]
        np.testing.assert_allclose(stats.hessian, rows.T @ rows / len(rows), rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
        np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
        np.testing.assert_allclose(stats.magnitudes, np.abs(rows).mean(0), rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]


def test_targets_and_weights_read_alike_from_protobuf_and_onnx_ir() -> None:
    """plan_targets reads Gemm's attributes and bias, a Constant-node weight counts, and
    read_weight gives one [rows, cols] matrix from a protobuf model, an ir.Model or the rewriter."""
    import onnx_ir as ir

    from edgeq.graph.passes.weight_only import WeightOnlyRewriter, plan_targets, read_weight

    rng = np.random.default_rng(3)
    w_gemm, c, w_const = (rng.normal(size=s).astype(np.float32) for s in ((64, 32), (32,), (32, 16)))
    nodes = [
        helper.make_node("Gemm", ["x", "Wg", "C"], ["g"], name="fc", alpha=0.5, beta=2.0),
        helper.make_node("Constant", [], ["Wc"], value=numpy_helper.from_array(w_const, "Wc")),
        helper.make_node("MatMul", ["g", "Wc"], ["y"], name="proj"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])],
        [numpy_helper.from_array(w_gemm, "Wg"), numpy_helper.from_array(c, "C")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    targets, left = plan_targets(model, include_embeddings=True)
    assert not left
    gemm, matmul = targets
    assert (gemm.rows, gemm.cols, gemm.transpose, gemm.alpha, gemm.bias, gemm.beta) == (32, 64, True, 0.5, "C", 2.0)
    assert (matmul.weight, matmul.rows, matmul.cols, matmul.output) == ("Wc", 16, 32, "y")
    rewriter = WeightOnlyRewriter(model)
    for target, expected in ((gemm, 0.5 * w_gemm.T), (matmul, w_const.T)):
        for got in (read_weight(model, target), read_weight(ir.serde.deserialize_model(model), target), rewriter.weight(target)):
            np.testing.assert_array_equal(got, expected)
            assert got.flags.c_contiguous
