"""What every weight-only algorithm takes and returns.

Weights arrive as ``[rows, cols]`` float arrays, blocked along ``cols`` (for a MatMul weight
``W[K, N]`` that is ``W.T``: one row per output, blocks along the reduction axis K). Calibration
statistics are plain arrays, so the math is testable without a model:

* ``hessian``: ``X^T X`` of the layer input over calibration tokens, ``[cols, cols]``; the output
  error of a weight perturbation ``D`` is exactly ``trace(D H D^T)``;
* ``magnitudes``: mean ``|x|`` per input channel, ``[cols]`` (AWQ's salience);
* ``mean``: mean ``x`` per input channel, ``[cols]``. With it, the data-driven algorithms fit
  the weight on the centred second moment ``H - mu mu^T`` and return a bias ``mu D^T`` that
  cancels the mean of the output error (a bias is free: the layer has one or gets one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.numerics.codecs import BlockQuantized

# Rows handled at once by the block-local searches: bounds the float64 temporaries on
# embedding tables (30k x 384) to a few tens of MB.
ROW_CHUNK = 2048
# The methods that weigh a weight's error by its layer's calibration activations.
DATA_DRIVEN = ("gptq", "awq")


@dataclass
class LayerStats:
    hessian: np.ndarray | None = None
    magnitudes: np.ndarray | None = None
    mean: np.ndarray | None = None

    @property
    def centered_hessian(self) -> np.ndarray | None:
        """``H - mu mu^T``: the error a weight change leaves once its mean is absorbed by a bias."""
        if self.hessian is None:
            return None
        if self.mean is None:
            return self.hessian
        mu = np.asarray(self.mean, np.float64)
        return np.asarray(self.hessian, np.float64) - np.outer(mu, mu)

    @property
    def importance(self) -> np.ndarray | None:
        """Per-input-channel weight of an element's squared error: diag(H), else |x|^2."""
        if self.hessian is not None:
            return np.clip(np.diag(self.hessian).astype(np.float64), 0.0, None)
        if self.magnitudes is not None:
            return np.asarray(self.magnitudes, np.float64) ** 2
        return None


@dataclass
class AlgorithmResult:
    """A quantized weight, plus (AWQ) per-input-channel factors the activation is multiplied by.

    With ``input_scale`` set, the layer computes ``(x * input_scale) @ dequantize().T``; with
    ``bias`` set, ``bias`` is added to its output.
    """

    quantized: BlockQuantized
    input_scale: np.ndarray | None = None
    bias: np.ndarray | None = None  # [rows], added to the layer output (mean-error correction)
    rtn_error: float | None = None  # RTN's output error on the same activations, when computed

    def effective_weight(self, rows: slice | None = None) -> np.ndarray:
        """The ``[rows, cols]`` weight the quantized layer applies to the original input (float64)."""
        deq = self.quantized.dequantize(rows).astype(np.float64)
        if self.input_scale is not None:
            deq = deq * self.input_scale[None, :]
        return deq


def data_free_fallback(
    method: str, *, table: bool, has_hessian: bool, flat: bool, cols: int, block_size: int
) -> tuple[str, str]:
    """The method that really fits one weight, and why it is not ``method`` ("" when it is).

    GPTQ and AWQ need the layer's input activations: a lookup table has none, a layer no
    calibration sample reached has none, and bnb4's flat layout (``flat``: blocks straddling
    rows, so K is not a multiple of ``block_size``) has no per-row blocks for them to walk. Each
    falls back to HQQ, the best data-free fit; RTN and HQQ are returned as they are.
    """
    if method not in DATA_DRIVEN:
        return method, ""
    if table:
        return "hqq", "hqq for the table: a lookup has no activations"
    if not has_hessian:
        return "hqq", "no calibration activations reached this node; hqq instead"
    if flat:
        return "hqq", f"K={cols} is not a multiple of block {block_size}: bnb4 blocks straddle rows, hqq instead"
    return method, ""


def output_error(w: np.ndarray, w_hat: np.ndarray, hessian: np.ndarray) -> float:
    """Relative output error on calibration activations: ||X D^T||^2 / ||X W^T||^2, via H = X^T X."""
    w64 = np.asarray(w, np.float64)
    d = w64 - np.asarray(w_hat, np.float64)
    h = np.asarray(hessian, np.float64)
    num = float(np.sum((d @ h) * d))
    den = float(np.sum((w64 @ h) * w64))
    return num / den if den > 0 else 0.0


def weighted_error(w: np.ndarray, w_hat: np.ndarray, hessian: np.ndarray | None) -> float:
    """Output error when a Hessian is known, plain relative weight MSE otherwise."""
    if hessian is not None:
        return output_error(w, w_hat, hessian)
    w64 = np.asarray(w, np.float64)
    den = float(np.sum(w64**2))
    return float(np.sum((w64 - w_hat) ** 2)) / den if den > 0 else 0.0


def bias_correction(w: np.ndarray, w_hat: np.ndarray, mean: np.ndarray | None) -> np.ndarray | None:
    """The bias ``mu (W - W_hat)^T`` that cancels the output error's mean over calibration data."""
    if mean is None:
        return None
    return (np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)) @ np.asarray(mean, np.float64)


def result_error(w: np.ndarray, result: AlgorithmResult, stats: LayerStats) -> float:
    """Relative output error of ``result`` on the calibration activations, bias included."""
    assert stats.hessian is not None
    w_hat = result.effective_weight()
    if result.bias is None:
        return output_error(w, w_hat, stats.hessian)
    d = np.asarray(w, np.float64) - w_hat
    centered = stats.centered_hessian
    assert centered is not None
    num = float(np.sum((d @ centered) * d))
    w64 = np.asarray(w, np.float64)
    den = float(np.sum((w64 @ np.asarray(stats.hessian, np.float64)) * w64))
    return num / den if den > 0 else 0.0


def weight_sqnr_db(w: np.ndarray, result: AlgorithmResult) -> float:
    """SQNR of the effective weight, accumulated row chunk by row chunk (tables are large)."""
    signal = 0.0
    noise = 0.0
    flat = result.quantized.shape != w.shape  # bnb4's flat layout of a weight that straddles rows
    if flat:
        diff = np.asarray(w, np.float64).reshape(-1) - result.effective_weight().reshape(-1)
        signal, noise = float(np.sum(np.asarray(w, np.float64) ** 2)), float(np.dot(diff, diff))
    else:
        for start in range(0, w.shape[0], ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            part = np.asarray(w[rows], np.float64)
            diff = part - result.effective_weight(rows)
            signal += float(np.sum(part * part))
            noise += float(np.sum(diff * diff))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))
