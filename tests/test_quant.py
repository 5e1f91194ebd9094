"""Quantizers and packing, against numpy and the gguf package's own dequantizer."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from lutlm import _C
from lutlm.quant import (
    Int4Weight,
    TernaryWeight,
    int4_from_gguf_blocks,
    quantize_int4,
    quantize_ternary,
    ternarize,
)

RAGGED = [(1, 1), (16, 32), (17, 33), (31, 100), (48, 257), (5, 1000)]


@pytest.mark.parametrize("per_row", [False, True])
def test_ternarize_is_absmean(rng, per_row):
    w = rng.standard_normal((37, 300)).astype(np.float32) * 0.02
    t, scale = ternarize(w, per_row)
    gamma = np.abs(w).mean(axis=1) if per_row else np.full(37, np.abs(w).mean())
    np.testing.assert_allclose(scale, gamma, rtol=1e-6)
    want = np.clip(np.round(w / gamma[:, None]), -1, 1)
    np.testing.assert_array_equal(t, want)
    assert set(np.unique(t)) <= {-1, 0, 1}
    np.testing.assert_allclose(quantize_ternary(w, per_row).dequantize(), t * scale[:, None])


@pytest.mark.parametrize("n,k", RAGGED)
def test_ternary_pack_round_trip(rng, n, k):
    t = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    w = TernaryWeight.pack(t, 1.0)
    np.testing.assert_array_equal(w.values(), t)
    # 2 bits per weight plus padding to 16 rows and 32 columns.
    assert w.codes.nbytes == -(-n // 16) * 16 * (-(-k // 32) * 32) // 4


@pytest.mark.parametrize("n,k", RAGGED)
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_pack_round_trip(rng, n, k, group_size):
    q = rng.integers(0, 16, size=(n, k)).astype(np.uint8)
    g = -(-k // group_size)
    d = rng.uniform(-1, 1, size=(n, g)).astype(np.float16)
    m = rng.uniform(-1, 1, size=(n, g)).astype(np.float16)
    w = Int4Weight.pack(q, d, m, group_size)
    np.testing.assert_array_equal(_C.unpack_int4(w.codes, n, k, group_size), q)
    dd = np.repeat(d.astype(np.float32), group_size, axis=1)[:, :k]
    mm = np.repeat(m.astype(np.float32), group_size, axis=1)[:, :k]
    np.testing.assert_array_equal(w.dequantize(), dd * q + mm)


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_quantization_error(rng, group_size, symmetric):
    w = rng.standard_normal((20, 300)).astype(np.float32)
    qw = quantize_int4(w, group_size, symmetric)
    err = np.abs(qw.dequantize() - w)
    d = np.repeat(np.abs(qw._unpack_scales(qw.d)), group_size, axis=1)[:, :300]
    # Round to nearest: half a step, except the symmetric format's -8..7 range clips
    # the group's extreme value by up to one step; fp16 scales add a little.
    limit = (1.0 if symmetric else 0.5) * d * (1 + 2e-3) + 2e-3 * np.abs(w)
    assert (err <= limit + 1e-6).all()


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_gguf_q4_import_is_bit_exact(rng, kind):
    qtype = GGMLQuantizationType[kind]
    w = (rng.standard_normal((40, 256)) * rng.uniform(0.01, 3, size=(40, 1))).astype(np.float32)
    blocks = quants.quantize(w, qtype)
    want = quants.dequantize(blocks, qtype)
    got = int4_from_gguf_blocks(blocks, (40, 256), kind)
    np.testing.assert_array_equal(got.dequantize(), want)
    # And the kernels compute with exactly those values.
    x = rng.standard_normal((3, 256)).astype(np.float32)
    ref = x.astype(np.float64) @ want.astype(np.float64).T
    for method in ("lut", "mad"):
        y = got.matmul(x, method)
        assert np.abs(y - ref).max() < 0.03 * np.abs(ref).max()


def test_gguf_import_errors():
    with pytest.raises(ValueError, match="needs 36 bytes, got 35"):
        int4_from_gguf_blocks(np.zeros(35, np.uint8), (2, 32), "Q4_0")
    with pytest.raises(ValueError, match="multiple of 32"):
        int4_from_gguf_blocks(np.zeros(18, np.uint8), (1, 31), "Q4_0")
    with pytest.raises(ValueError, match="Q4_0 or Q4_1"):
        int4_from_gguf_blocks(np.zeros(18, np.uint8), (1, 32), "Q5_0")
