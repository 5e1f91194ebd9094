"""GEMM kernels against float64 numpy references.

Each method's error is bounded analytically (docs/ARCHITECTURE.md, "Error bounds"):
  * mad: x is quantized to int8 with scale s = max|x|/127 per row (ternary) or per
    weight group g (INT4, INT8), so |y - W.x| <= sum_k |W[n,k]| * s_k/2 (+ fp32 rounding);
  * lut: every table lookup is off by at most t/2 (t = table scale), so for ternary
    |y - W.x| <= scale[n] * t/2 * (pairs of row n that are not (0, 0)), and for INT4
    |y - W.x| <= sum_g |d[n,g]| * t_g/2 * sum over quads of the plane weights 2^b of
    non-zero plane codes (planes of q ^ 8, the two's complement of q - 8).
The ternary kernels are also checked bit for bit against a numpy emulation of their
integer arithmetic, and every SIMD path bit for bit against the scalar one.
"""

import numpy as np
import pytest

from lutlm import _C
from lutlm.quant import (
    Int4Weight,
    Int8Weight,
    TernaryWeight,
    quantize_int4,
    quantize_int8,
    quantize_ternary,
)

ISAS = _C.cpu_info()["available_isas"]

SHAPES = [(1, 1), (15, 7), (17, 33), (50, 100), (33, 257), (40, 1000), (16, 4096)]
MS = [1, 3, 17, 64]
F32_EPS = np.finfo(np.float32).eps


def random_ternary(rng, n, k, per_row=True):
    t = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
    scales = rng.uniform(0.5, 2.0, size=n).astype(np.float32) if per_row else np.float32(0.7)
    return t, TernaryWeight.pack(t, scales)


def pairs(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the last axis into (even, odd) columns, zero-padding an odd length."""
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (1,), a.dtype)], axis=-1)
    return a[..., 0::2], a[..., 1::2]


def emulate_ternary_lut(x: np.ndarray, t: np.ndarray, scales: np.ndarray) -> np.ndarray:
    x0, x1 = pairs(x.astype(np.float32))  # [M, P]
    w0, w1 = pairs(t.astype(np.float32))  # [N, P]
    amax = (np.abs(x0) + np.abs(x1)).max(axis=1)  # float32, as the kernel
    inv = np.float32(127) / np.where(amax > 0, amax, np.float32(1))
    v = w0[None] * x0[:, None] + w1[None] * x1[:, None]  # float32 [M, N, P]
    q = np.clip(np.rint(v * inv[:, None, None]), -127, 127)
    acc = q.sum(axis=2, dtype=np.float64).astype(np.float32)
    tscale = amax / np.float32(127.0)
    return (acc * tscale[:, None]) * scales[None, :]


def emulate_ternary_mad(x: np.ndarray, t: np.ndarray, scales: np.ndarray) -> np.ndarray:
    amax = np.abs(x).max(axis=1).astype(np.float32)
    inv = np.float32(127) / np.where(amax > 0, amax, np.float32(1))
    x8 = np.clip(np.rint(x.astype(np.float32) * inv[:, None]), -127, 127)
    acc = (x8.astype(np.float64) @ t.T.astype(np.float64)).astype(np.float32)
    return (acc * (amax / np.float32(127.0))[:, None]) * scales[None, :]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_ternary_matches_integer_emulation(rng, isa, n, k, method):
    _C.set_isa(isa)
    t, w = random_ternary(rng, n, k)
    emulate = emulate_ternary_lut if method == "lut" else emulate_ternary_mad
    for m in MS:
        x = rng.standard_normal((m, k)).astype(np.float32)
        np.testing.assert_array_equal(w.matmul(x, method), emulate(x, t, w.scales))


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_ternary_error_bound(rng, n, k, method):
    t, w = random_ternary(rng, n, k)
    wd = t.astype(np.float64) * w.scales[:, None].astype(np.float64)
    for m in MS:
        x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
        y = w.matmul(x, method).astype(np.float64)
        ref = x.astype(np.float64) @ wd.T
        mag = np.abs(x.astype(np.float64)) @ np.abs(wd).T
        if method == "mad":
            s = np.abs(x).max(axis=1).astype(np.float64) / 127
            bound = (s / 2)[:, None] * (np.abs(t).astype(np.float64) @ np.ones(k))[None, :]
            bound = bound * w.scales[None, :]
        else:
            x0, x1 = pairs(x.astype(np.float64))
            tsc = (np.abs(x0) + np.abs(x1)).max(axis=1) / 127
            t0, t1 = pairs(t)
            nonzero_pairs = ((t0 != 0) | (t1 != 0)).sum(axis=1)
            bound = (tsc / 2)[:, None] * nonzero_pairs[None, :] * w.scales[None, :]
        slack = 8 * F32_EPS * mag + 1e-30
        err = np.abs(y - ref)
        assert (err <= bound * (1 + 1e-5) + slack).all(), (err - bound).max()
        # The bound is not vacuous: the error is a small part of the result's scale.
        assert err.max() <= 0.05 * mag.max() + 1e-30


def int4_bound(x, w: Int4Weight, method):
    """Derived worst-case error of w.matmul(x, method) against W_deq . x."""
    n, k = w.shape
    gs = w.group_size
    q = _C.unpack_int4(w.codes, n, k, gs).astype(np.int64)
    d = np.abs(w._unpack_scales(w.d)).astype(np.float64)  # [N, G]
    x64 = x.astype(np.float64)
    kp = d.shape[1] * gs
    if method == "mad":  # activations quantized per weight group
        xg = np.zeros((x.shape[0], kp))
        xg[:, :k] = np.abs(x64)
        s = xg.reshape(x.shape[0], -1, gs).max(axis=2) / 127  # [M, G]
        wd = np.zeros((n, kp))
        wd[:, :k] = np.abs(w.dequantize().astype(np.float64))
        return (s / 2) @ wd.reshape(n, -1, gs).sum(axis=2).T
    qp = np.full((n, kp), 8, np.int64)  # padding is a zero weight
    qp[:, :k] = q
    xp = np.zeros((x.shape[0], kp))
    xp[:, :k] = x64
    quads = xp.reshape(x.shape[0], -1, 4)
    pos = np.where(quads > 0, quads, 0).sum(axis=2)
    neg = np.where(quads < 0, quads, 0).sum(axis=2)
    amax = np.maximum(pos, -neg).reshape(x.shape[0], d.shape[1], gs // 4).max(axis=2)  # [M, G]
    tsc = amax / 127
    qq = (qp ^ 8).reshape(n, -1, 4)  # the kernel's planes hold q ^ 8
    weight = sum((2**b) * (((qq >> b) & 1).any(axis=2)) for b in range(4))  # [N, quads]
    per_group = weight.reshape(n, d.shape[1], gs // 4).sum(axis=2) * d  # [N, G]
    return (tsc / 2) @ per_group.T


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_int4_error_bound(rng, n, k, group_size, symmetric, method):
    w = quantize_int4(rng.standard_normal((n, k)).astype(np.float32), group_size, symmetric)
    wd = w.dequantize().astype(np.float64)
    q = _C.unpack_int4(w.codes, n, k, group_size).astype(np.float64)
    d = np.repeat(np.abs(w._unpack_scales(w.d)), group_size, axis=1)[:, :k]
    mags = np.abs(d * q) + np.abs(wd - d * q)  # |d q| + |m| per weight
    for m in MS:
        x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
        y = w.matmul(x, method).astype(np.float64)
        ref = x.astype(np.float64) @ wd.T
        slack = (4 * (k // group_size + 2)) * F32_EPS * (np.abs(x.astype(np.float64)) @ mags.T)
        err = np.abs(y - ref)
        bound = int4_bound(x, w, method)
        assert (err <= bound * (1 + 1e-5) + slack + 1e-30).all(), (err - bound - slack).max()


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_simd_matches_scalar(rng, isa, n, k, method):
    wt = quantize_ternary(rng.standard_normal((n, k)).astype(np.float32), per_row=True)
    w4 = quantize_int4(rng.standard_normal((n, k)).astype(np.float32), 64, symmetric=False)
    w4s = quantize_int4(rng.standard_normal((n, k)).astype(np.float32), 128, symmetric=True)
    for m in MS:
        x = rng.standard_normal((m, k)).astype(np.float32)
        for w in (wt, w4, w4s):
            _C.set_isa("scalar")
            want = w.matmul(x, method)
            _C.set_isa(isa)
            np.testing.assert_array_equal(w.matmul(x, method), want)


def test_threads_do_not_change_results(rng):
    w = quantize_int4(rng.standard_normal((300, 700)).astype(np.float32))
    w8 = quantize_int8(rng.standard_normal((300, 700)).astype(np.float32))
    x = rng.standard_normal((5, 700)).astype(np.float32)
    runs = [lambda: w.matmul(x, "lut"), lambda: w.matmul(x, "mad"), lambda: w8.matmul(x, 16)]
    for run in runs:
        _C.set_num_threads(1)
        one = run()
        _C.set_num_threads(3)
        np.testing.assert_array_equal(run(), one)


@pytest.mark.parametrize("kind", ["ternary", "int4"])
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_zero_weights_and_activations(kind, method):
    n, k = 40, 96
    if kind == "ternary":
        w = TernaryWeight.pack(np.zeros((n, k), np.int8), 1.0)
    else:
        w = Int4Weight.pack(np.full((n, k), 8, np.uint8), np.ones((n, 3)), None, 32)
    x = np.random.default_rng(0).standard_normal((3, k)).astype(np.float32)
    np.testing.assert_array_equal(w.matmul(x, method), np.zeros((3, n), np.float32))
    w2 = (
        quantize_ternary(x[:1].repeat(n, 0))
        if kind == "ternary"
        else quantize_int4(x[:1].repeat(n, 0))
    )
    np.testing.assert_array_equal(w2.matmul(np.zeros((2, k)), method), np.zeros((2, n)))


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e30])
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_huge_and_tiny_activations(rng, scale, method):
    n, k = 24, 200
    t, wt = random_ternary(rng, n, k)
    w4 = quantize_int4(rng.standard_normal((n, k)).astype(np.float32))
    x = (rng.standard_normal((2, k)) * scale).astype(np.float32)
    for w in (wt, w4):
        y = w.matmul(x, method).astype(np.float64)
        ref = x.astype(np.float64) @ w.dequantize().astype(np.float64).T
        assert np.isfinite(y).all()
        mag = np.abs(x.astype(np.float64)) @ np.abs(w.dequantize().astype(np.float64)).T
        assert (np.abs(y - ref) <= 0.05 * mag).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["lut", "mad"])
def test_non_finite_activations_give_nan_rows(rng, bad, method):
    """Documented: a row of x holding NaN or Inf yields a row of NaN; other rows are exact."""
    n, k = 20, 64
    _, wt = random_ternary(rng, n, k)
    w4 = quantize_int4(rng.standard_normal((n, k)).astype(np.float32))
    x = rng.standard_normal((3, k)).astype(np.float32)
    x[1, 5] = bad
    for w in (wt, w4):
        y = w.matmul(x, method)
        assert np.isnan(y[1]).all()
        np.testing.assert_array_equal(y[[0, 2]], w.matmul(x[[0, 2]], method))


def test_vector_and_empty_batch(rng):
    _, w = random_ternary(rng, 10, 40)
    x = rng.standard_normal(40).astype(np.float32)
    np.testing.assert_array_equal(w.matmul(x), w.matmul(x[None])[0])
    assert w.matmul(np.zeros((0, 40), np.float32)).shape == (0, 10)


def test_auto_dispatch_follows_crossover():
    lim = _C.cpu_info()["lut_max_m"]
    assert _C.resolve_method("auto", lim["ternary"], False) == "lut"
    assert _C.resolve_method("auto", lim["ternary"] + 1, False) == "mad"
    assert _C.resolve_method("auto", lim["int4"] + 1, True) == "mad"
    assert _C.resolve_method("lut", 512, True) == "lut"


@pytest.mark.parametrize("n,k", [(1, 1), (17, 33), (300, 576), (49, 1000)])
def test_gemm_f32_against_numpy_and_scalar(rng, n, k):
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((3, k)).astype(np.float32)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    _C.set_isa("scalar")
    want = _C.gemm_f32(x, w)
    np.testing.assert_allclose(want, ref, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    for isa in ISAS:
        _C.set_isa(isa)
        np.testing.assert_array_equal(_C.gemm_f32(x, w), want)


@pytest.mark.parametrize("method", ["lut", "mad"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_two_pass_activations(rng, method, symmetric):
    """act_bits=16: the second int8 pass (residual activations or residual tables)
    shrinks the error ~250x below the one-pass bound, identically on every ISA."""
    w = quantize_int4(rng.standard_normal((70, 300)).astype(np.float32), 32, symmetric)
    x = rng.standard_normal((3, 300)).astype(np.float32)
    ref = x.astype(np.float64) @ w.dequantize().astype(np.float64).T
    bound = int4_bound(x, w, method)
    mag = np.abs(x.astype(np.float64)) @ np.abs(w.dequantize().astype(np.float64)).T
    outs = []
    for isa in ISAS:
        _C.set_isa(isa)
        outs.append(w.matmul(x, method, act_bits=16))
        np.testing.assert_array_equal(outs[-1], outs[0])
    err = np.abs(outs[0] - ref)
    assert (err <= bound / 100 + 64 * F32_EPS * mag).all()
    with pytest.raises(ValueError, match="act_bits must be 8 or 16"):
        w.matmul(x, method, act_bits=4)


# --- INT8 (MAD only) ---------------------------------------------------------------

INT8_SHAPES = [(1, 1), (15, 7), (17, 33), (40, 100), (33, 257), (50, 1000)]


def random_int8(rng, n, k, group_size):
    """Codes over the whole int8 range, each row holding both -128 and 127, and fp16
    scales spanning two decades."""
    q = rng.integers(-128, 128, size=(n, k)).astype(np.int8)
    q[:, 0] = -128
    q[:, -1] = 127
    d = rng.uniform(1e-3, 1e-1, size=(n, -(-k // group_size))).astype(np.float16)
    return Int8Weight.pack(q, d, group_size)


def int8_bound(x, w: Int8Weight):
    """Derived worst-case error of one int8 pass: sum_g s_g/2 * sum_{k in g} |W[n,k]|,
    where s_g = max_{k in g} |x_k| / 127 is the activation scale of weight group g."""
    n, k = w.shape
    gs = w.group_size
    kp = -(-k // gs) * gs
    xa = np.zeros((x.shape[0], kp))
    xa[:, :k] = np.abs(x.astype(np.float64))
    wa = np.zeros((n, kp))
    wa[:, :k] = np.abs(w.dequantize().astype(np.float64))
    s = xa.reshape(x.shape[0], -1, gs).max(axis=2) / 127  # [M, G]
    return (s / 2) @ wa.reshape(n, -1, gs).sum(axis=2).T


@pytest.mark.parametrize("n,k", INT8_SHAPES)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("act_bits", [8, 16])
def test_int8_error_bound(rng, n, k, group_size, act_bits):
    """act_bits=8 stays within the derived bound; act_bits=16's second pass quantizes
    what the first lost (|r| <= s/2, so s_2 <= s/254) and must be ~250x tighter."""
    w = random_int8(rng, n, k, group_size)
    wd = w.dequantize().astype(np.float64)
    for m in [1, 3, 17]:
        x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
        y = w.matmul(x, act_bits=act_bits).astype(np.float64)
        ref = x.astype(np.float64) @ wd.T
        mag = np.abs(x.astype(np.float64)) @ np.abs(wd).T
        bound = int8_bound(x, w)
        if act_bits == 16:
            bound = bound / 200
        slack = (4 * (k // group_size + 2)) * F32_EPS * mag + 1e-30
        err = np.abs(y - ref)
        assert (err <= bound * (1 + 1e-5) + slack).all(), (err - bound - slack).max()
        # The bound is not vacuous: the error is a small part of the result's scale.
        assert err.max() <= (0.02 if act_bits == 8 else 1e-4) * mag.max() + 1e-30


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
@pytest.mark.parametrize("n,k", INT8_SHAPES)
@pytest.mark.parametrize("act_bits", [8, 16])
def test_int8_simd_matches_scalar(rng, isa, n, k, act_bits):
    """Also at the int16 extremes: codes -128 and 127 against x8 = +-127."""
    weights = [random_int8(rng, n, k, gs) for gs in (32, 64, 128)]
    extreme = np.where(rng.integers(0, 2, size=(n, k)) == 1, 127, -128).astype(np.int8)
    weights.append(Int8Weight.pack(extreme, np.ones((n, -(-k // 32))), 32))
    for m in [1, 3, 17]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[0] = np.where(rng.integers(0, 2, size=k) == 1, 1.0, -1.0)  # all |x8| = 127
        for w in weights:
            _C.set_isa("scalar")
            want = w.matmul(x, act_bits)
            _C.set_isa(isa)
            np.testing.assert_array_equal(w.matmul(x, act_bits), want)


@pytest.mark.parametrize("act_bits", [8, 16])
def test_int8_non_finite_zero_and_extreme_activations(rng, act_bits):
    """A row holding NaN or Inf gives a row of NaN, other rows are unaffected; zero rows
    give exact zeros; activations from 1e-30 to 1e30 keep their precision."""
    n, k = 20, 100
    w = random_int8(rng, n, k, 32)
    wd = w.dequantize().astype(np.float64)
    x = rng.standard_normal((5, k)).astype(np.float32)
    x[1, 5], x[2, 99], x[3] = np.nan, -np.inf, 0.0
    y = w.matmul(x, act_bits)
    assert np.isnan(y[[1, 2]]).all()
    np.testing.assert_array_equal(y[3], np.zeros(n, np.float32))
    np.testing.assert_array_equal(y[[0, 4]], w.matmul(x[[0, 4]], act_bits))
    for scale in (1e-30, 1e30):
        xs = (x[[0, 4]].astype(np.float64) * scale).astype(np.float32)
        ys = w.matmul(xs, act_bits).astype(np.float64)
        mag = np.abs(xs.astype(np.float64)) @ np.abs(wd).T
        assert np.isfinite(ys).all()
        assert (np.abs(ys - xs.astype(np.float64) @ wd.T) <= 0.02 * mag).all()
    assert w.matmul(np.zeros((0, k), np.float32)).shape == (0, n)
    np.testing.assert_array_equal(w.matmul(x[0]), w.matmul(x[:1])[0])


# -- INT4 nibble layout --------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_nibbles_equal_planes_mad_bit_for_bit(rng, isa, group_size, symmetric):
    """The nibble layout is another encoding of the same codes: MAD over it (fused in
    registers for few rows, through a decode buffer for many) must give exactly what
    MAD over the bit planes gives, whose error bound the tests above check."""
    _C.set_isa(isa)
    for n, k in [(1, 1), (17, 33), (50, 300), (33, 257)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        planes = quantize_int4(w, group_size, symmetric)
        nibbles = quantize_int4(w, group_size, symmetric, layout="nibbles")
        assert nibbles.layout == "nibbles" and nibbles.codes.shape == planes.codes.shape
        np.testing.assert_array_equal(nibbles.dequantize(), planes.dequantize())
        for m in (1, 2, 3, 5, 17):
            x = rng.standard_normal((m, k)).astype(np.float32)
            x[m // 2, 0] = np.nan if m > 2 else x[m // 2, 0]
            for act_bits in (8, 16):
                ref = planes.matmul(x, method="mad", act_bits=act_bits)
                got = nibbles.matmul(x, act_bits=act_bits)  # auto: always MAD
                np.testing.assert_array_equal(got, ref, err_msg=f"{n}x{k} M={m} a{act_bits}")


def test_int4_nibbles_refuse_lut_and_bad_layouts(rng):
    w = quantize_int4(rng.standard_normal((20, 64)).astype(np.float32), layout="nibbles")
    with pytest.raises(ValueError, match="needs INT4 weights in the 'planes' layout"):
        w.matmul(np.ones((1, 64), np.float32), method="lut")
    with pytest.raises(ValueError, match="layout must be one of"):
        quantize_int4(np.ones((2, 32), np.float32), layout="bits")
    with pytest.raises(ValueError, match="layout must be 'planes' or 'nibbles'"):
        _C.gemm_int4(np.ones((1, 64), np.float32), w.codes, w.d, None, 20, 64, 32, "mad", 8, "x")
    with pytest.raises(ValueError, match="codes 0..15"):
        Int4Weight.pack(np.full((2, 32), 16, np.uint8), np.ones((2, 1)), None, 32, "nibbles")
