"""Codecs: exact pack/unpack round-trips and quantization against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeq.numerics.codecs import FP4_TABLE, NF4_TABLE, get_codec, quantize_with_params
from edgeq.numerics.codecs.packing import (
    pack_bits,
    pack_nibbles_high_first,
    packed_length,
    unpack_bits,
    unpack_nibbles_high_first,
)
from edgeq.numerics.weight_only.rtn import fit_params, rtn

CODECS = [("int2", True), ("int2", False), ("int4", True), ("int4", False), ("int8", True), ("int8", False), ("nf4", True), ("fp4", True)]


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from([2, 4, 8]),
    rows=st.integers(1, 7),
    cols=st.integers(1, 70),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_unpack_round_trip(bits: int, rows: int, cols: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (rows, cols)).astype(np.uint8)
    packed = pack_bits(codes, bits)
    assert packed.shape == (rows, packed_length(cols, bits))
    np.testing.assert_array_equal(unpack_bits(packed, bits, cols), codes)


def test_pack_layout_is_low_order_first() -> None:
    assert pack_bits(np.array([1, 2]), 4).tolist() == [0x21]
    assert pack_bits(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert pack_bits(np.array([3]), 2).tolist() == [3]  # the tail is padded with zero codes
    with pytest.raises(ValueError):
        pack_bits(np.array([4]), 2)


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 99), seed=st.integers(0, 2**31 - 1))
def test_high_nibble_first_round_trip(count: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 16, count).astype(np.uint8)
    packed = pack_nibbles_high_first(codes)
    assert packed.size == (count + 1) // 2
    np.testing.assert_array_equal(unpack_nibbles_high_first(packed, count), codes)
    if count >= 2:
        assert packed[0] == (codes[0] << 4) | codes[1]


def _reference_int(w: np.ndarray, bits: int, symmetric: bool, block: int) -> np.ndarray:
    """Float64 min-max block quantization written from the definitions, element by element per block."""
    rows, cols = w.shape
    out = np.zeros_like(w, dtype=np.float64)
    qmax = 2**bits - 1
    for r in range(rows):
        for start in range(0, cols, block):
            x = w[r, start : start + block].astype(np.float64)
            if symmetric:
                extreme = x[np.argmax(np.abs(x))]
                scale = np.float64(np.float32(extreme / -(2 ** (bits - 1))))
                zero = 2 ** (bits - 1)
            else:
                lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
                scale = (hi - lo) / qmax
                zero = np.clip(np.round(-lo / scale), 0, qmax) if scale else 0
                scale = np.float64(np.float32(scale))
            q = np.clip(np.round(x / scale + zero), 0, qmax) if scale else np.full_like(x, zero)
            out[r, start : start + block] = (q - zero) * scale
    return out


@pytest.mark.parametrize(("bits", "symmetric"), [(2, True), (2, False), (4, True), (4, False), (8, True), (8, False)])
@pytest.mark.parametrize(("rows", "cols", "block"), [(5, 64, 32), (7, 70, 32), (3, 100, 64), (1, 16, 16)])
def test_minmax_integer_codec_matches_reference(bits: int, symmetric: bool, rows: int, cols: int, block: int) -> None:
    w = np.random.default_rng(bits * 100 + cols).standard_normal((rows, cols)).astype(np.float32)
    q = rtn(get_codec(f"int{bits}", symmetric), w, block, clip_search=False).quantized
    np.testing.assert_allclose(q.dequantize(), _reference_int(w, bits, symmetric, block), rtol=1e-6, atol=1e-6)
    assert q.codes.shape == (rows, cols) and q.scales.shape == (rows, -(-cols // block))
    assert (q.zero_points is None) == symmetric


@pytest.mark.parametrize("name", ["nf4", "fp4"])
def test_table_codecs_pick_the_nearest_level(name: str) -> None:
    table = NF4_TABLE if name == "nf4" else FP4_TABLE
    codec = get_codec(name)
    w = np.random.default_rng(1).standard_normal((4, 96))
    q = rtn(codec, w, 32, clip_search=False).quantized
    absmax = np.abs(w.reshape(4, 3, 32)).max(-1)
    np.testing.assert_allclose(q.scales, absmax, rtol=1e-6)
    normalized = w.reshape(4, 3, 32) / absmax[..., None]
    nearest = np.abs(normalized[..., None] - table.astype(np.float64)).min(-1)
    chosen = np.abs(normalized - table[q.codes.reshape(4, 3, 32)])
    np.testing.assert_allclose(chosen, nearest, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    codec_index=st.integers(0, len(CODECS) - 1),
    rows=st.integers(1, 9),
    cols=st.integers(1, 150),
    block=st.sampled_from([16, 32, 64, 128]),
    seed=st.integers(0, 2**31 - 1),
)
def test_dequantized_values_re_encode_to_the_same_codes(codec_index: int, rows: int, cols: int, block: int, seed: int) -> None:
    """Quantization is idempotent: codes -> values -> codes is exact for every codec and shape."""
    name, symmetric = CODECS[codec_index]
    codec = get_codec(name, symmetric)
    w = np.random.default_rng(seed).standard_normal((rows, cols)) * 3
    q = rtn(codec, w, block).quantized
    again = quantize_with_params(codec, q.dequantize(), block, q.scales, q.zero_points)
    np.testing.assert_array_equal(again.codes, q.codes)
    packed = pack_bits(q.codes, codec.bits)
    np.testing.assert_array_equal(unpack_bits(packed, codec.bits, cols), q.codes)


def test_clip_search_is_never_worse_than_minmax() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_t(3, (32, 256))
    for name, symmetric in CODECS:
        codec = get_codec(name, symmetric)
        plain = rtn(codec, w, 32, clip_search=False).quantized.dequantize()
        searched = rtn(codec, w, 32).quantized.dequantize()
        plain_err = ((w - plain) ** 2).reshape(32, 8, 32).sum(-1)
        searched_err = ((w - searched) ** 2).reshape(32, 8, 32).sum(-1)
        assert np.all(searched_err <= plain_err * (1 + 1e-5) + 1e-9), name


def test_zero_blocks_quantize_to_zero() -> None:
    w = np.zeros((2, 40))
    for name, symmetric in CODECS:
        q = rtn(get_codec(name, symmetric), w, 16).quantized
        assert np.all(q.dequantize() == 0), name
        scales, _ = fit_params(get_codec(name, symmetric), w, 16)
        assert np.all(np.isfinite(scales))
