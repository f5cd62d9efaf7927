"""Small ONNX graphs shaped like the networks int8 QDQ is for (MobileNet blocks, a transformer MLP)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mobilenet_block(seed: int = 0, batchnorm: bool = True, channels: int = 8, head_relu6: bool = False) -> onnx.ModelProto:
    """stem conv (+BN) -> ReLU6 -> expand -> ReLU6 -> depthwise -> ReLU6 -> project -> residual Add
    -> MaxPool -> head conv -> ReLU (ReLU6 with ``head_relu6``) -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    c, e = channels, channels * 2

    def param(name: str, shape: tuple[int, ...], scale: float = 0.3, positive: bool = False) -> str:
        value = rng.standard_normal(shape) * scale
        if positive:
            value = np.abs(value) + 0.5
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    inits.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
    inits.append(numpy_helper.from_array(np.array(6, np.float32), "six"))
    nodes.append(helper.make_node("Conv", ["input", param("stem.w", (c, 3, 3, 3))], ["stem_c"], name="stem", pads=[1, 1, 1, 1]))
    if batchnorm:
        nodes.append(helper.make_node(
            "BatchNormalization",
            ["stem_c", param("bn.g", (c,), positive=True), param("bn.b", (c,), 0.2), param("bn.m", (c,), 0.1), param("bn.v", (c,), 0.2, positive=True)],
            ["stem_o"], name="stem_bn",
        ))
    else:
        nodes.append(helper.make_node("Identity", ["stem_c"], ["stem_o"], name="stem_id"))
    nodes.append(helper.make_node("Clip", ["stem_o", "zero", "six"], ["a0"], name="relu6_0"))
    nodes.append(helper.make_node("Conv", ["a0", param("expand.w", (e, c, 1, 1)), param("expand.b", (e,), 0.1)], ["e"], name="expand"))
    nodes.append(helper.make_node("Clip", ["e", "zero", "six"], ["e6"], name="relu6_1"))
    nodes.append(helper.make_node("Conv", ["e6", param("dw.w", (e, 1, 3, 3), 1.0), param("dw.b", (e,), 0.1)], ["d"], name="dw", group=e, pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Clip", ["d", "zero", "six"], ["d6"], name="relu6_2"))
    nodes.append(helper.make_node("Conv", ["d6", param("project.w", (c, e, 1, 1)), param("project.b", (c,), 0.1)], ["p"], name="project"))
    nodes.append(helper.make_node("Add", ["p", "a0"], ["r"], name="residual_add"))
    nodes.append(helper.make_node("MaxPool", ["r"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Conv", ["mp", param("head.w", (4 * c, c, 1, 1)), param("head.b", (4 * c,), 0.1)], ["h"], name="head"))
    if head_relu6:
        nodes.append(helper.make_node("Clip", ["h", "zero", "six"], ["hr"], name="relu6_head"))
    else:
        nodes.append(helper.make_node("Relu", ["h"], ["hr"], name="relu_head"))
    nodes.append(helper.make_node("GlobalAveragePool", ["hr"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", param("fc.w", (10, 4 * c)), param("fc.b", (10,), 0.1)], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "mobilenet_block",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp_with_layernorm(seed: int = 0, width: int = 16, outlier_channel: int = 3) -> onnx.ModelProto:
    """LayerNorm -> (MatMul q, MatMul k) summed -> Relu -> MatMul: one channel has large activations."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(width, np.float32)
    gamma[outlier_channel] = 30.0
    inits = [
        numpy_helper.from_array(gamma, "ln.g"),
        numpy_helper.from_array(np.zeros(width, np.float32), "ln.b"),
        numpy_helper.from_array((rng.standard_normal((width, width)) * 0.2).astype(np.float32), "wq"),
        numpy_helper.from_array((rng.standard_normal((width, width)) * 0.2).astype(np.float32), "wk"),
        numpy_helper.from_array((rng.standard_normal((width, 4)) * 0.2).astype(np.float32), "wo"),
        numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "bo"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.g", "ln.b"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "wq"], ["q"], name="mm_q"),
        helper.make_node("MatMul", ["ln", "wk"], ["k"], name="mm_k"),
        helper.make_node("Add", ["q", "k"], ["qk"], name="add_qk"),
        helper.make_node("Relu", ["qk"], ["act"], name="relu"),
        helper.make_node("MatMul", ["act", "wo"], ["o"], name="mm_out"),
        helper.make_node("Add", ["o", "bo"], ["y"], name="bias_out"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], exact: bool = False) -> list[np.ndarray]:
    """Outputs from onnxruntime; ``exact`` turns graph optimizations off, so Q/DQ are computed as
    written rather than by fused int8 kernels (which saturate on x86 CPUs without VNNI)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def images(n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)
