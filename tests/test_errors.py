"""Bad input is refused with a ValueError that names the problem, never a crash."""

import numpy as np
import pytest

from lutlm import _C
from lutlm.quant import (
    Int4Weight,
    TernaryWeight,
    quantize_int4,
    quantize_int8,
    quantize_ternary,
)


@pytest.fixture
def weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 50)).astype(np.float32)
    return quantize_ternary(w), quantize_int4(w, 32), quantize_int8(w, 32)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 49), np.float32), r"\[M, 50\]"),
        (np.zeros((2, 3, 50), np.float32), r"shape"),
        (np.zeros((0,), np.float32), r"shape"),
    ],
)
def test_wrong_activation_shape(weights, x, match):
    for w in weights:
        with pytest.raises(ValueError, match=match):
            w.matmul(x)


def test_native_layer_validates_too(weights):
    wt, w4, _ = weights
    x = np.zeros((1, 50), np.float32)
    with pytest.raises(ValueError, match="x has K=50 but the weight has K=51"):
        _C.gemm_ternary(x, wt.codes, wt.scales, 20, 51, "lut")
    with pytest.raises(ValueError, match="codes has shape"):
        _C.gemm_ternary(x, wt.codes[:1], wt.scales, 20, 50, "lut")
    with pytest.raises(ValueError, match="codes must have dtype uint8"):
        _C.gemm_ternary(x, wt.codes.astype(np.int16), wt.scales, 20, 50, "lut")
    with pytest.raises(ValueError, match="scales has shape"):
        _C.gemm_ternary(x, wt.codes, wt.scales[:3], 20, 50, "lut")
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.gemm_int4(x, w4.codes, np.asfortranarray(w4.d), None, 20, 50, 32, "mad")
    with pytest.raises(ValueError, match="group_size must be 32, 64 or 128"):
        _C.gemm_int4(x, w4.codes, w4.d, None, 20, 50, 16, "mad")
    with pytest.raises(ValueError, match="must be non-empty"):
        _C.pack_ternary(np.zeros((0, 5), np.int8))


def test_gemm_int8_validates(weights):
    w8 = weights[2]
    x = np.zeros((1, 50), np.float32)
    assert _C.gemm_int8(x, w8.codes, w8.d, 20, 50, 32, 8).shape == (1, 20)
    with pytest.raises(ValueError, match=r"codes must have dtype int8, got uint8"):
        _C.gemm_int8(x, w8.codes.view(np.uint8), w8.d, 20, 50, 32, 8)
    with pytest.raises(
        ValueError, match=r"codes has shape \(1, 16, 16, 4\), expected \(2, 16, 16, 4\)"
    ):
        _C.gemm_int8(x, w8.codes[:1], w8.d, 20, 50, 32, 8)
    with pytest.raises(
        ValueError, match=r"codes has shape \(2, 16, 64\), expected \(2, 16, 16, 4\)"
    ):
        _C.gemm_int8(x, w8.codes.reshape(2, 16, 64), w8.d, 20, 50, 32, 8)
    with pytest.raises(ValueError, match=r"d has shape \(2, 2, 16\), expected \(2, 1, 16\)"):
        _C.gemm_int8(x, w8.codes, w8.d, 20, 50, 64, 8)
    with pytest.raises(ValueError, match=r"d must have dtype uint16 \(fp16 bits\), got float32"):
        _C.gemm_int8(x, w8.codes, w8.d.astype(np.float32), 20, 50, 32, 8)
    with pytest.raises(ValueError, match="x has K=50 but the weight has K=49"):
        _C.gemm_int8(x, w8.codes, w8.d, 20, 49, 32, 8)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.gemm_int8(x, np.asfortranarray(w8.codes), w8.d, 20, 50, 32, 8)
    with pytest.raises(ValueError, match="group_size must be 32, 64 or 128"):
        _C.gemm_int8(x, w8.codes, w8.d, 20, 50, 16, 8)
    with pytest.raises(ValueError, match="act_bits must be 8 or 16, got 4"):
        _C.gemm_int8(x, w8.codes, w8.d, 20, 50, 32, 4)


def test_bad_method(weights):
    with pytest.raises(ValueError, match="method must be"):
        weights[0].matmul(np.zeros(50, np.float32), method="fast")
    with pytest.raises(ValueError, match="method must be 'auto', 'lut' or 'mad'"):
        _C.resolve_method("fast", 1, False)


def test_bad_weight_values():
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        TernaryWeight.pack(np.full((3, 4), 2, np.int8), 1.0)
    with pytest.raises(ValueError, match="0..15"):
        Int4Weight.pack(np.full((3, 32), 16, np.uint8), np.ones((3, 1)), None, 32)
    with pytest.raises(ValueError, match="d must have shape"):
        Int4Weight.pack(np.zeros((3, 64), np.uint8), np.ones((3, 1)), None, 32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_int4(np.full((2, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(np.zeros((2, 32), np.float32), group_size=48)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        quantize_ternary(np.zeros(5, np.float32))


def test_bad_settings():
    with pytest.raises(ValueError, match="not available on this CPU"):
        _C.set_isa("sve9")
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        _C.set_num_threads(0)
