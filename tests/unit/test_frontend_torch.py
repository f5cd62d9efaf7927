"""to_onnx: exported graphs run in onnxruntime, pass the checker and match the module."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from edgeq.errors import ConfigError, UnsupportedError  # noqa: E402
from edgeq.frontends.torch import DEFAULT_OPSET, TorchExportResult, to_onnx  # noqa: E402


class ConvBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Dropout(0.5),
                                       torch.nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class TwoInputs(torch.nn.Module):
    """Two inputs sharing a dynamic batch axis, two outputs (a dict, flattened in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 3)
        self.b = torch.nn.Linear(2, 3)

    def forward(self, x, y):
        s = self.a(x) + self.b(y)
        return {"sum": s, "norm": s.norm(dim=-1)}


class CountsCalls(torch.nn.Module):
    """Python state that changes per call: the traced graph bakes in a different value."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * float(self.calls)


def _ort(model_or_path, feeds):
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def _with_bn_statistics(module: ConvBN) -> ConvBN:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        module.bn.running_mean.copy_(torch.rand(8, generator=g) - 0.5)
        module.bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
        module.bn.weight.copy_(torch.rand(8, generator=g) + 0.5)
    return module


def test_conv_bn_exported_in_eval_mode_and_file_checked(tmp_path):
    torch.manual_seed(0)
    module = _with_bn_statistics(ConvBN())
    assert module.training
    x = torch.randn(2, 3, 12, 12)
    result = to_onnx(module, x, tmp_path / "convbn.onnx", input_names=["input"], output_names=["logits"])
    assert module.training, "the module's mode is restored after export"
    assert result.path == str(tmp_path / "convbn.onnx")
    assert result.opset == DEFAULT_OPSET == 18
    assert result.input_names == ["input"] and result.output_names == ["logits"]
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    onnx.checker.check_model(str(tmp_path / "convbn.onnx"), full_check=True)
    # Batch norm must use the running statistics (eval), not the batch's own.
    module.eval()
    with torch.no_grad():
        expected = module(x).numpy()
    (got,) = _ort(tmp_path / "convbn.onnx", {"input": x.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        train_out = module.train()(x).numpy()
    assert np.max(np.abs(train_out - got)) > 1e-3  # the check above is not vacuous


def test_mlp_without_path_keeps_model_in_memory_and_dropout_off():
    torch.manual_seed(1)
    module = MLP()
    x = torch.randn(3, 16)
    result = to_onnx(module, (x,))
    assert result.path is None and result.model is not None
    onnx.checker.check_model(result.model, full_check=True)
    (got,) = _ort(result.model, {result.input_names[0]: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, module.eval()(x).numpy(), atol=1e-5, rtol=1e-4)


def test_two_inputs_dynamic_batch_runs_at_other_batch_sizes(tmp_path):
    torch.manual_seed(2)
    module = TwoInputs()
    x, y = torch.randn(2, 6), torch.randn(2, 2)
    result = to_onnx(
        module, (x, y), tmp_path / "two.onnx", input_names=["x", "y"], output_names=["sum", "norm"],
        dynamic_shapes=({0: "batch"}, {0: "batch"}),
    )
    model = onnx.load(str(tmp_path / "two.onnx"))
    batch_dims = [i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input]
    assert batch_dims == ["batch", "batch"]
    assert set(result.output_max_abs_diff) == {"sum", "norm"}
    x5, y5 = torch.randn(5, 6), torch.randn(5, 2)
    got_sum, got_norm = _ort(tmp_path / "two.onnx", {"x": x5.numpy(), "y": y5.numpy()})
    with torch.no_grad():
        ref = module(x5, y5)
    np.testing.assert_allclose(got_sum, ref["sum"].numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got_norm, ref["norm"].numpy(), atol=1e-5, rtol=1e-4)
    # The JSON record round-trips without the in-memory graph.
    again = TorchExportResult.from_json(result.to_json())
    assert again.model is None and again.output_names == ["sum", "norm"]


def test_graph_that_disagrees_with_module_is_refused_and_not_written(tmp_path):
    target = tmp_path / "counts.onnx"
    with pytest.raises(UnsupportedError, match=r"disagrees with the module.*max abs diff.*no file was written"):
        to_onnx(CountsCalls(), torch.ones(2, 3), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # A tolerance wide enough accepts it, and reports the difference it accepted.
    result = to_onnx(CountsCalls(), torch.ones(2, 3), target, atol=100.0)
    assert result.max_abs_diff is not None and 0.5 < result.max_abs_diff < 100.0 and target.is_file()


def test_lower_opset_the_exporter_cannot_reach_is_refused():
    with pytest.raises(UnsupportedError, match=r"opset 17 \(it produced opset 18\)"):
        to_onnx(ConvBN(), torch.randn(1, 3, 8, 8), opset=17)


def test_higher_opset_is_honoured():
    result = to_onnx(MLP(), torch.randn(2, 16), opset=21)
    assert result.opset == 21
    assert [o.version for o in result.model.opset_import if o.domain == ""] == [21]


@pytest.mark.parametrize(
    "module,inputs,kwargs,error,pattern",
    [
        ("not a module", torch.ones(1), {}, ConfigError, r"expected a torch.nn.Module, got str"),
        (MLP(), [torch.ones(1, 16), 3], {}, ConfigError, r"example_inputs\[1\]: expected a torch.Tensor, got int"),
        (MLP(), (), {}, ConfigError, r"example_inputs: empty"),
        (MLP(), torch.ones(1, 16), {"input_names": ["a", "b"]}, ConfigError, r"input_names: 2 names given for 1"),
        (MLP(), torch.ones(1, 16), {"output_names": ["a", "b"]}, ConfigError, r"output_names: 2 names given for 1"),
        (MLP(), torch.ones(1, 7), {}, ConfigError, r"MLP: forward\(\) failed on the example inputs: RuntimeError"),
        (MLP(), torch.ones(1, 16), {"atol": -1.0}, ConfigError, r"tolerances must be >= 0"),
    ],
)
def test_user_mistakes_are_one_line_errors(module, inputs, kwargs, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        to_onnx(module, inputs, **kwargs)
    assert "\n" not in str(info.value)


def test_untraceable_module_names_the_root_cause(capfd):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedError, match=r"could not export DataDependent: .*data-dependent") as info:
        to_onnx(DataDependent(), torch.ones(2, 2))
    assert "\n" not in str(info.value)
    captured = capfd.readouterr()
    assert "GraphModule" not in captured.err + captured.out  # the exporter's dumps stay hidden


def test_nodes_and_linear_weights_are_named_after_their_modules():
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(8, 16)
            self.fc2 = torch.nn.Linear(16, 8)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    module = torch.nn.Sequential(Block(), Block())
    result = to_onnx(module, torch.randn(2, 3, 8))  # 3-D input: Linear becomes MatMul on W^T
    graph = result.model.graph
    matmuls = [(n.name, n.input[1]) for n in graph.node if n.op_type == "MatMul"]
    assert matmuls == [(f"{b}.{fc}/MatMul", f"{b}.{fc}.weight_t") for b in "01" for fc in ("fc1", "fc2")]
    inits = {t.name: t for t in graph.initializer}
    w = onnx.numpy_helper.to_array(inits["1.fc2.weight_t"])
    np.testing.assert_array_equal(w, module[1].fc2.weight.detach().numpy().T)
    assert len({n.name for n in graph.node}) == len(graph.node)
    assert all(len(n.metadata_props) == 0 for n in graph.node)  # no source paths of this machine


def test_conv_with_folded_batchnorm_is_named_after_the_conv():
    result = to_onnx(_with_bn_statistics(ConvBN()), torch.randn(2, 3, 8, 8))
    convs = [n for n in result.model.graph.node if n.op_type == "Conv"]
    assert [n.name for n in convs] == ["conv/Conv"] and convs[0].input[1] == "conv.weight"
    assert "BatchNormalization" not in {n.op_type for n in result.model.graph.node}  # folded, checked above
