"""Every ONNX format edgeq writes, executed by onnxruntime against the numpy dequantized weight."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeq.graph.formats import Emitted, bnb4, gather, matmulnbits, qdq
from edgeq.numerics.codecs import FP4_TABLE, NF4_TABLE, BlockQuantized, get_codec
from edgeq.numerics.weight_only.rtn import rtn


def _model(emitted: Emitted, inputs: list[onnx.ValueInfoProto], output_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        emitted.nodes, "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, output_shape)], emitted.initializers
    )
    opsets = {"": 17, **emitted.opsets}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = False) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _weight(codec_name: str, symmetric: bool, n: int, k: int, block: int, seed: int = 0) -> BlockQuantized:
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    return rtn(get_codec(codec_name, symmetric), w, block).quantized


SHAPES = [(8, 64, 32), (7, 70, 32), (5, 100, 64), (3, 40, 16)]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("n", "k", "block"), SHAPES)
def test_matmulnbits_matches_reference(bits: int, symmetric: bool, n: int, k: int, block: int) -> None:
    q = _weight(f"int{bits}", symmetric, n, k, block, seed=bits + k)
    model = _model(matmulnbits.emit(q, "A", "Y", "w", np.dtype(np.float32)), [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, k])], [3, n])
    a = np.random.default_rng(1).standard_normal((3, k)).astype(np.float32)
    expected = a.astype(np.float64) @ q.dequantize().T.astype(np.float64)
    np.testing.assert_allclose(_run(model, {"A": a}), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("level", [1, 4])
def test_matmulnbits_accuracy_level(level: int) -> None:
    q = _weight("int4", False, 16, 64, 32)
    emitted = matmulnbits.emit(q, "A", "Y", "w", np.dtype(np.float32), accuracy_level=level)
    assert helper.get_attribute_value(next(a for a in emitted.nodes[0].attribute if a.name == "accuracy_level")) == level
    model = _model(emitted, [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 64])], [2, 16])
    a = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    expected = a @ q.dequantize().T
    # Level 4 quantizes A to int8 inside the kernel: close, not exact.
    tolerance = 1e-4 if level == 1 else 3e-2
    np.testing.assert_allclose(_run(model, {"A": a}, optimize=True), expected, atol=tolerance * np.abs(expected).max())


def test_matmulnbits_refuses_table_codes() -> None:
    from edgeq.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="bnb4"):
        matmulnbits.emit(_weight("nf4", True, 4, 64, 32), "A", "Y", "w", np.dtype(np.float32))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("n", "k", "block"), [(8, 64, 32), (7, 70, 32), (5, 128, 64), (12, 128, 64)])
def test_dequantize_linear_matmul_matches_reference(bits: int, symmetric: bool, n: int, k: int, block: int) -> None:
    q = _weight(f"int{bits}", symmetric, n, k, block, seed=3 * bits + k)
    if bits == 2 and (k % block or n % 4):
        assert qdq.check_matmul(q) is not None  # refused: onnxruntime's fusion is wrong there
        return
    emitted = qdq.emit(q, "A", "Y", "w", np.dtype(np.float32))
    assert emitted.opsets[""] == (25 if bits == 2 else 21)
    model = _model(emitted, [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, k])], [3, n])
    model.opset_import[0].version = emitted.opsets[""]
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    a = np.random.default_rng(4).standard_normal((3, k)).astype(np.float32)
    expected = a.astype(np.float64) @ q.dequantize().T.astype(np.float64)
    np.testing.assert_allclose(_run(model, {"A": a}), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # With onnxruntime's default fusions (DQ+MatMul -> MatMulNBits, int8 activations) still close.
    np.testing.assert_allclose(_run(model, {"A": a}, optimize=True), expected, atol=3e-2 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["nf4", "fp4"])
@pytest.mark.parametrize(("n", "k", "block"), [(8, 64, 32), (7, 64, 64), (5, 70, 32), (3, 40, 16)])
def test_matmulbnb4_matches_reference(name: str, n: int, k: int, block: int) -> None:
    w = np.random.default_rng(k + n).standard_normal((n, k)).astype(np.float32)
    codec = get_codec(name)
    flat = bnb4.flat_layout(n, k, block)
    q = rtn(codec, w.reshape(1, -1) if flat else w, block).quantized
    model = _model(bnb4.emit(q, n, k, "A", "Y", "w", np.dtype(np.float32)), [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, k])], [3, n])
    a = np.random.default_rng(5).standard_normal((3, k)).astype(np.float32)
    expected = a.astype(np.float64) @ q.dequantize().reshape(n, k).T.astype(np.float64)
    np.testing.assert_allclose(_run(model, {"A": a}), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("name", "quant_type", "table"), [("fp4", 0, FP4_TABLE), ("nf4", 1, NF4_TABLE)])
def test_bnb4_code_tables_match_onnxruntime(name: str, quant_type: int, table: np.ndarray) -> None:
    """Decoding code c with absmax 1 must give table[c]: the tables are onnxruntime's."""
    codes = np.arange(16, dtype=np.uint8)
    q = BlockQuantized(get_codec(name), 16, codes[None, :], np.ones((1, 1), np.float32))
    emitted = bnb4.emit(q, 1, 16, "A", "Y", "w", np.dtype(np.float32))
    assert helper.get_attribute_value(next(a for a in emitted.nodes[0].attribute if a.name == "quant_type")) == quant_type
    model = _model(emitted, [helper.make_tensor_value_info("A", TensorProto.FLOAT, [16, 16])], [16, 1])
    decoded = _run(model, {"A": np.eye(16, dtype=np.float32)})[:, 0]
    np.testing.assert_array_equal(decoded, table)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("vocab", "width", "block"), [(50, 64, 32), (33, 68, 32), (9, 69, 16)])
def test_gather_block_quantized_matches_reference(bits: int, symmetric: bool, vocab: int, width: int, block: int) -> None:
    q = _weight(f"int{bits}", symmetric, vocab, width, block, seed=vocab + bits)
    if bits == 2 and width % 4:
        assert gather.check_table(q) is not None
        return
    model = _model(gather.emit(q, "I", "Y", "t", np.dtype(np.float32)), [helper.make_tensor_value_info("I", TensorProto.INT64, [2, 5])], [2, 5, width])
    idx = np.random.default_rng(6).integers(0, vocab, (2, 5)).astype(np.int64)
    np.testing.assert_allclose(_run(model, {"I": idx}), q.dequantize()[idx], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("bits", "symmetric"), [(2, False), (4, True), (4, False), (8, True)])
def test_dequantize_linear_gather_matches_reference(bits: int, symmetric: bool) -> None:
    q = _weight(f"int{bits}", symmetric, 40, 70, 32, seed=bits)
    emitted = qdq.emit_gather(q, "I", "Y", "t", np.dtype(np.float32))
    model = _model(emitted, [helper.make_tensor_value_info("I", TensorProto.INT64, [3])], [3, 70])
    model.opset_import[0].version = emitted.opsets[""]
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    idx = np.array([0, 39, 7], np.int64)
    np.testing.assert_allclose(_run(model, {"I": idx}, optimize=True), q.dequantize()[idx], rtol=1e-6, atol=1e-6)
