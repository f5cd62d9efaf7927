"""RTN, HQQ, GPTQ and AWQ on plain arrays: each is never worse than RTN on the calibration activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.numerics.codecs import get_codec
from edgeq.numerics.weight_only import LayerStats, output_error, run
from edgeq.numerics.weight_only.awq import channel_scales
from edgeq.numerics.weight_only.gptq import gptq_walk
from edgeq.numerics.weight_only.rtn import rtn

CODECS = [("int2", False), ("int4", True), ("int4", False), ("int8", True), ("nf4", True)]


def _activations(k: int, tokens: int = 2000, seed: int = 0) -> np.ndarray:
    """Correlated activations with a few loud channels, like a transformer's."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    loud = np.exp(rng.standard_normal(k))
    return (rng.standard_normal((tokens, k)) @ mix) * loud


def _stats(x: np.ndarray) -> LayerStats:
    return LayerStats(hessian=x.T @ x / len(x), magnitudes=np.abs(x).mean(0))


def _real_weights() -> list[np.ndarray]:
    """Two MiniLM weight matrices as [N, K], when the example model has been built."""
    from tests.conftest import examples_cache

    path = Path(examples_cache()) / "minilm.onnx"
    if not path.is_file():
        pytest.skip("minilm.onnx not built (run examples/models.py)")
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("MatMul.weight") or (t.dims and len(t.dims) == 2 and t.dims[0] == 384 and t.dims[1] in (384, 1536))]
    return [w.T.astype(np.float32) for w in weights[:2]]


@pytest.mark.parametrize(("name", "symmetric"), CODECS)
@pytest.mark.parametrize("method", ["hqq", "gptq", "awq"])
def test_never_worse_than_rtn_on_random_weights(name: str, symmetric: bool, method: str) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 96)).astype(np.float32)
    x = _activations(96)
    stats = _stats(x)
    codec = get_codec(name, symmetric)
    baseline = output_error(w, rtn(codec, w, 32, stats).effective_weight(), stats.hessian)  # type: ignore[arg-type]
    result = run(method, codec, w, 32, stats)
    error = output_error(w, result.effective_weight(), stats.hessian)  # type: ignore[arg-type]
    assert error <= baseline * (1 + 1e-9)
    # The measured error is what the activations see: check it against X directly.
    direct = np.sum((x @ (w - result.effective_weight()).T) ** 2) / np.sum((x @ w.T) ** 2)
    assert abs(direct - error) <= 1e-6 * max(direct, 1e-12) + 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hqq", "gptq", "awq"])
def test_never_worse_than_rtn_on_real_weights(method: str) -> None:
    for w in _real_weights():
        x = _activations(w.shape[1], tokens=1500, seed=2)
        stats = _stats(x)
        codec = get_codec("int4", True)
        baseline = output_error(w, rtn(codec, w, 32, stats).effective_weight(), stats.hessian)  # type: ignore[arg-type]
        error = output_error(w, run(method, codec, w, 32, stats).effective_weight(), stats.hessian)  # type: ignore[arg-type]
        assert error <= baseline * (1 + 1e-9)
        if method == "gptq":
            assert error < 0.8 * baseline  # error feedback must help on correlated activations


def test_gptq_clearly_beats_rtn_on_correlated_activations() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 128))
    stats = _stats(_activations(128, seed=5))
    for name, symmetric in (("int4", True), ("int2", False)):
        codec = get_codec(name, symmetric)
        baseline = output_error(w, rtn(codec, w, 32, stats).effective_weight(), stats.hessian)  # type: ignore[arg-type]
        for act_order in (True, False):
            result = run("gptq", codec, w, 32, stats, gptq_act_order=act_order)
            assert output_error(w, result.effective_weight(), stats.hessian) < 0.8 * baseline  # type: ignore[arg-type]


def test_gptq_with_identity_hessian_is_rtn_on_the_same_grid() -> None:
    """Without correlations there is nothing to push the error onto: GPTQ must round to nearest."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((16, 70))
    codec = get_codec("int4", False)
    reference = rtn(codec, w, 32).quantized
    walked = gptq_walk(codec, w, 32, np.eye(70), reference.scales, reference.zero_points, damp=0.0, act_order=True)
    np.testing.assert_array_equal(walked.codes, reference.codes)


def test_gptq_dead_channels_and_damping() -> None:
    rng = np.random.default_rng(7)
    x = _activations(64, seed=8)
    x[:, 5] = 0.0  # a channel never active in calibration
    w = rng.standard_normal((8, 64))
    stats = _stats(x)
    result = run("gptq", get_codec("int4", True), w, 32, stats, gptq_damp=0.1)
    assert np.all(np.isfinite(result.effective_weight()))


def test_awq_scales_follow_magnitudes() -> None:
    magnitudes = np.array([0.1, 1.0, 10.0, 0.0])
    s = channel_scales(magnitudes, 0.5)
    assert np.isclose(np.exp(np.mean(np.log(s))), 1.0)
    assert s[0] < s[1] < s[2] and s[3] == s[0]
    np.testing.assert_allclose(channel_scales(magnitudes, 0.0), 1.0)


def test_data_driven_methods_need_statistics() -> None:
    with pytest.raises(ValueError, match="calibration"):
        run("gptq", get_codec("int4"), np.ones((4, 32)), 32, None)


def test_bias_correction_cancels_the_mean_output_error() -> None:
    """With the input mean known, the returned bias makes the measured error exactly what X sees."""
    from edgeq.numerics.weight_only.common import result_error

    rng = np.random.default_rng(10)
    x = _activations(96, seed=11) + 3.0 * rng.standard_normal(96)  # inputs with a strong mean (post-GELU-like)
    w = rng.standard_normal((32, 96))
    stats = LayerStats(hessian=x.T @ x / len(x), magnitudes=np.abs(x).mean(0), mean=x.mean(0))
    codec = get_codec("int2", False)
    for method in ("gptq", "awq"):
        with_bias = run(method, codec, w, 32, stats)
        assert with_bias.bias is not None and with_bias.bias.shape == (32,)
        err = result_error(w, with_bias, stats)
        out = x @ w.T
        direct = np.sum((out - (x @ with_bias.effective_weight().T + with_bias.bias)) ** 2) / np.sum(out**2)
        assert abs(direct - err) <= 1e-6 * direct
        without = run(method, codec, w, 32, LayerStats(hessian=stats.hessian, magnitudes=stats.magnitudes))
        assert without.bias is None
        assert err < output_error(w, without.effective_weight(), stats.hessian)  # type: ignore[arg-type]


@pytest.mark.parametrize("symmetric", [True, False])
def test_data_free_rtn_keeps_the_full_block_range(symmetric: bool) -> None:
    """Without calibration statistics RTN's grid spans each block (absmax or min..max): no weight
    is clipped, the outlier included (float64 check); with statistics the clipping search may only
    narrow the grid."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 64))
    w[3, 5] = 12.0  # an outlier a plain squared-error search would clip
    codec = get_codec("int4", symmetric)
    q = rtn(codec, w, 32).quantized
    step = np.repeat(np.abs(q.scales.astype(np.float64)), 32, axis=1)
    error = np.abs(q.dequantize().astype(np.float64) - w)
    # min..max: every weight within half a step; symmetric maps the block's extreme onto -2^(b-1),
    # so the other sign has one level less (up to one step there), the extreme itself is exact.
    assert (error <= (1.0 if symmetric else 0.5) * step * (1 + 1e-6) + 1e-7).all()
    assert error[3, 5] <= 0.5 * step[3, 5] + 1e-6  # the outlier is kept, not clipped
    x = _activations(64)
    clipped = rtn(codec, w, 32, _stats(x)).quantized
    assert np.abs(clipped.scales[3, 0]) <= np.abs(q.scales[3, 0]) + 1e-9  # the search never widens the grid
