"""The fused per-token layer operations against numpy."""

import hashlib
import sys
import threading
import time

import numpy as np
import pytest

from lutlm import _C


def np_rms_norm(x, w, eps):
    x64 = x.astype(np.float64)
    return x64 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps) * w


def test_rms_norm_and_fused_residual(rng):
    x = (rng.standard_normal((5, 576)) * 30).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    np.testing.assert_allclose(
        _C.rms_norm(x, w, 1e-5), np_rms_norm(x, w, 1e-5), rtol=2e-6, atol=2e-6
    )
    h = x.copy()
    d = rng.standard_normal((5, 576)).astype(np.float32)
    y = _C.add_rms_norm(h, d, w, 1e-6)
    np.testing.assert_array_equal(h, x + d)
    np.testing.assert_allclose(y, np_rms_norm(x + d, w, 1e-6), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_against_numpy(rng, interleaved):
    T, H, d = 7, 3, 64
    x = rng.standard_normal((T, H, d)).astype(np.float32)
    pos = np.array([0, 1, 5, 100, 2047, 8000, 3], np.int64)
    inv = (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    ang = pos[:, None, None].astype(np.float64) * inv.astype(np.float64)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., : d // 2], x[..., d // 2 :]
    ra, rb = a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)
    want = np.empty_like(x, dtype=np.float64)
    if interleaved:
        want[..., 0::2], want[..., 1::2] = ra, rb
    else:
        want[..., : d // 2], want[..., d // 2 :] = ra, rb
    got = x.copy()
    _C.rope(got, pos, inv, interleaved)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head_dim must be even"):
        _C.rope(np.zeros((1, 1, 3), np.float32), pos[:1], inv[:1], False)


@pytest.mark.parametrize("relu2", [False, True])
def test_gated_activation(rng, relu2):
    gu = (rng.standard_normal((4, 2 * 96)) * 4).astype(np.float32)
    g, u = gu[:, :96].astype(np.float64), gu[:, 96:].astype(np.float64)
    want = (np.maximum(g, 0) ** 2 if relu2 else g / (1 + np.exp(-g))) * u
    np.testing.assert_allclose(_C.gated_act(gu, relu2), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[T, 2F\]"):
        _C.gated_act(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("interleaved", [False, True])
def test_qkv_rope_cache_is_split_rope_and_cache_write(rng, interleaved):
    """The fused op equals its parts: the split, _C.rope (tested above against numpy)
    on q and k, and _C.write_kv_cache; a negative slot skips its token."""
    T, H, KV, d, nb, bs = 6, 8, 2, 16, 5, 4
    qkv = rng.standard_normal((T, (H + 2 * KV) * d)).astype(np.float32)
    pos = np.array([0, 3, 4, 9, 17, 2], np.int64)
    inv = (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    slots = np.array([0, 7, -1, 12, 19, 5], np.int32)
    kc, vc = np.zeros((nb, bs, KV, d), np.float16), np.zeros((nb, bs, KV, d), np.float16)
    q = _C.qkv_rope_cache(qkv, pos, inv, interleaved, slots, kc, vc, H)
    want_q = np.ascontiguousarray(qkv[:, : H * d]).reshape(T, H, d)
    k = np.ascontiguousarray(qkv[:, H * d : (H + KV) * d]).reshape(T, KV, d)
    v = np.ascontiguousarray(qkv[:, (H + KV) * d :]).reshape(T, KV, d)
    _C.rope(want_q, pos, inv, interleaved)
    _C.rope(k, pos, inv, interleaved)
    kw, vw = np.zeros_like(kc), np.zeros_like(vc)
    _C.write_kv_cache(k, v, slots, kw, vw)
    np.testing.assert_array_equal(q, want_q)
    np.testing.assert_array_equal(kc, kw)
    np.testing.assert_array_equal(vc, vw)
    assert not kc.reshape(-1, KV, d)[[1, 2, 3]].any()  # untouched slots
    with pytest.raises(ValueError, match="multiple of the cache's 2 kv heads"):
        _C.qkv_rope_cache(qkv, pos, inv, interleaved, slots, kc, vc, 3)
    with pytest.raises(ValueError, match="outside the cache of 20 slots"):
        _C.qkv_rope_cache(qkv, pos, inv, interleaved, slots + 20, kc, vc, H)


def _main_thread_share(call, seconds=0.3):
    """The fraction of the time the main thread ran Python while another thread made
    `call` over and over: the main thread spins and adds up the gaps between consecutive
    iterations shorter than `blocked` (an iteration takes well under a microsecond)."""
    switch, blocked = 1e-4, 5e-5
    done = threading.Event()

    def worker():
        try:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                call()
        finally:
            done.set()

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(switch)
    try:
        thread = threading.Thread(target=worker)
        start = last = time.perf_counter()
        thread.start()
        running = 0.0
        while not done.is_set():
            now = time.perf_counter()
            if now - last < blocked:
                running += now - last
            last = now
        wall = time.perf_counter() - start
        thread.join()
    finally:
        sys.setswitchinterval(old_switch)
    return running / wall


@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "rope"])
def test_layer_ops_release_the_gil(op):
    """Another thread keeps running Python while one is inside the op.

    Compared with hashing a large buffer, which keeps a core busy without the GIL
    (hashlib releases it), so that the load of the machine cancels out. An op that held
    the GIL through each call (~15-90 ms here) would let the main thread run only for a
    couple of switch intervals per call: a few percent of the time."""
    x = np.ones((4096, 4096), np.float32)
    w = np.ones(4096, np.float32)
    positions = np.arange(16384, dtype=np.int64)
    inv_freq = np.full(512, 1e-3, np.float32)
    call = {
        "rms_norm": lambda: _C.rms_norm(x, w, 1e-5),
        "add_rms_norm": lambda: _C.add_rms_norm(x, x, w, 1e-5),
        # head_dim 1024: the cos/sin of every (token, pair) dominate the call.
        "rope": lambda: _C.rope(x.reshape(16384, 1, 1024), positions, inv_freq, False),
    }[op]
    call()  # the output's first page faults, outside the measurement
    data = x.tobytes()
    baseline = _main_thread_share(lambda: hashlib.sha256(data).digest())
    share = _main_thread_share(call)
    assert share > 0.5 * baseline, (
        f"beside {op} the main thread ran {share:.0%} of the time, beside sha256 {baseline:.0%}"
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_in_place_ops_refuse_arrays_they_would_silently_copy(dtype):
    """add_rms_norm and rope write into their argument: an array of another dtype would be
    converted to a temporary float32 copy and the update lost, so it is an error."""
    h = np.zeros((2, 8), dtype)
    with pytest.raises(ValueError, match="h must be a writable C-contiguous float32"):
        _C.add_rms_norm(h, np.ones((2, 8), np.float32), np.ones(8, np.float32), 1e-6)
    x = np.zeros((2, 1, 8), dtype)
    with pytest.raises(ValueError, match="x must be a writable C-contiguous float32"):
        _C.rope(x, np.arange(2, dtype=np.int64), np.ones(4, np.float32), False)
    strided = np.zeros((2, 16), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="h must be"):
        _C.add_rms_norm(strided, np.ones((2, 8), np.float32), np.ones(8, np.float32), 1e-6)
