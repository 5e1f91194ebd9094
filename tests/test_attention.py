"""Paged KV cache writes and attention against a float64 numpy reference."""

import numpy as np
import pytest

from lutlm import _C

ISAS = _C.cpu_info()["available_isas"]


def reference_attention(q, keys, values, q_lens, scale):
    """Causal attention per sequence; keys/values: list of [ctx, n_kv, hd] float64."""
    out, t = [], 0
    n_heads = q.shape[1]
    for s, q_len in enumerate(q_lens):
        k, v = keys[s], values[s]
        ctx = k.shape[0]
        group = n_heads // k.shape[1]
        for j in range(q_len):
            pos = ctx - q_len + j
            o = np.zeros((n_heads, q.shape[2]))
            for h in range(n_heads):
                sc = (k[: pos + 1, h // group] @ q[t + j, h].astype(np.float64)) * scale
                p = np.exp(sc - sc.max())
                o[h] = (p / p.sum()) @ v[: pos + 1, h // group]
            out.append(o)
        t += q_len
    return np.stack(out)


def build_cache(rng, ctx_lens, n_kv, hd, block_size, num_blocks, share_prefix=0):
    """Random K/V per sequence written through write_kv_cache into shuffled blocks.

    With share_prefix > 0, every sequence reuses sequence 0's first share_prefix blocks
    (same physical blocks, same contents), as a prefix cache does.
    """
    k_cache = np.zeros((num_blocks, block_size, n_kv, hd), np.float16)
    v_cache = np.zeros_like(k_cache)
    # The highest block ids, shuffled: non-contiguous tables, large ids.
    free = list(num_blocks - 1 - rng.permutation(min(num_blocks, 256)))
    max_blocks = max(-(-c // block_size) for c in ctx_lens)
    tables = np.full((len(ctx_lens), max_blocks + 2), -1, np.int32)
    keys, values = [], []
    for s, ctx in enumerate(ctx_lens):
        nblk = -(-ctx // block_size)
        shared = min(share_prefix, nblk) if s > 0 else 0
        tables[s, :shared] = tables[0, :shared]
        for b in range(shared, nblk):
            tables[s, b] = free.pop()
        k = rng.standard_normal((ctx, n_kv, hd)).astype(np.float32)
        v = rng.standard_normal((ctx, n_kv, hd)).astype(np.float32)
        if shared:
            k[: shared * block_size] = keys[0][: shared * block_size]
            v[: shared * block_size] = values[0][: shared * block_size]
        pos = np.arange(ctx)
        slots = (tables[s, pos // block_size] * block_size + pos % block_size).astype(np.int32)
        slots[: shared * block_size] = -1  # already in the cache
        _C.write_kv_cache(k, v, slots, k_cache, v_cache)
        # The reference sees what the cache holds: fp16-rounded values.
        keys.append(k.astype(np.float16).astype(np.float64))
        values.append(v.astype(np.float16).astype(np.float64))
    return k_cache, v_cache, tables, keys, values


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n_heads,n_kv", [(4, 4), (8, 2), (5, 1), (9, 3)])
@pytest.mark.parametrize("hd", [64, 128])
def test_mixed_prefill_and_decode(rng, isa, n_heads, n_kv, hd):
    _C.set_isa(isa)
    block_size = 16
    ctx_lens = [1, 17, 40, 33, 16]
    q_lens = [1, 17, 1, 9, 16]  # decode, full prefill, decode, chunk over a prefix, prefill
    k_cache, v_cache, tables, keys, values = build_cache(
        rng, ctx_lens, n_kv, hd, block_size, num_blocks=64
    )
    T = sum(q_lens)
    q = rng.standard_normal((T, n_heads, hd)).astype(np.float32)
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    scale = hd**-0.5
    out = _C.paged_attention(q, k_cache, v_cache, tables, np.array(ctx_lens, np.int32), cu, scale)
    want = reference_attention(q, keys, values, q_lens, scale)
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-5)


def test_shared_prefix_blocks_and_many_blocks(rng):
    """Sequences sharing physical prefix blocks; block ids beyond 2^16 catch index overflow."""
    n_heads, n_kv, hd, bs = 4, 2, 64, 16
    ctx_lens = [70, 75, 64]
    k_cache, v_cache, tables, keys, values = build_cache(
        rng, ctx_lens, n_kv, hd, bs, num_blocks=70000, share_prefix=3
    )
    assert (tables[1, :3] == tables[0, :3]).all() and tables.max() > 1 << 16
    q_lens = [1, 1, 1]
    q = rng.standard_normal((3, n_heads, hd)).astype(np.float32)
    cu = np.arange(4, dtype=np.int32)
    out = _C.paged_attention(q, k_cache, v_cache, tables, np.array(ctx_lens, np.int32), cu, 0.125)
    want = reference_attention(q, keys, values, q_lens, 0.125)
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_cache_write_rounds_like_numpy(rng, isa):
    _C.set_isa(isa)
    k_cache = np.zeros((4, 16, 2, 64), np.float16)
    v_cache = np.zeros_like(k_cache)
    k = (rng.standard_normal((10, 2, 64)) * np.logspace(-8, 5, 64)).astype(np.float32)
    v = -k
    slots = np.array([3, 5, 17, 63, 0, -1, 20, 21, 22, 40], np.int32)
    _C.write_kv_cache(k, v, slots, k_cache, v_cache)
    flat_k = k_cache.reshape(-1, 2, 64)
    with np.errstate(over="ignore"):  # values past 65504 must become inf, as in numpy
        k16, v16 = k.astype(np.float16), v.astype(np.float16)
    assert np.isinf(k16).any()
    for t, s in enumerate(slots):
        if s >= 0:
            np.testing.assert_array_equal(flat_k[s], k16[t])
            np.testing.assert_array_equal(v_cache.reshape(-1, 2, 64)[s], v16[t])
    assert not k_cache.reshape(-1, 2, 64)[[1, 2, 4]].any()  # untouched slots


def test_attention_input_errors(rng):
    k_cache = np.zeros((4, 16, 2, 64), np.float16)
    q = np.zeros((2, 4, 64), np.float32)
    tables = np.array([[0, 1], [2, 3]], np.int32)
    ctx = np.array([1, 1], np.int32)
    cu = np.array([0, 1, 2], np.int32)
    with pytest.raises(ValueError, match="block_tables\\[0\\] = 9 is not a block"):
        _C.paged_attention(q, k_cache, k_cache, np.array([[9, 1], [2, 3]], np.int32), ctx, cu, 1.0)
    with pytest.raises(ValueError, match="context_len 0 < its 1 queries"):
        _C.paged_attention(q, k_cache, k_cache, tables, np.array([0, 1], np.int32), cu, 1.0)
    with pytest.raises(ValueError, match="needs 3 blocks"):
        _C.paged_attention(q, k_cache, k_cache, tables, np.array([40, 1], np.int32), cu, 1.0)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        _C.paged_attention(np.zeros((2, 3, 64), np.float32), k_cache, k_cache, tables, ctx, cu, 1.0)
    with pytest.raises(ValueError, match="dtype float16"):
        _C.paged_attention(q, k_cache.astype(np.float32), k_cache, tables, ctx, cu, 1.0)
    with pytest.raises(ValueError, match="outside the cache of 64 slots"):
        _C.write_kv_cache(
            np.zeros((1, 2, 64), np.float32),
            np.zeros((1, 2, 64), np.float32),
            np.array([64], np.int32),
            k_cache,
            k_cache.copy(),
        )


@pytest.mark.parametrize("shape", [(4, 16, 0, 64), (4, 0, 2, 64)])
def test_cache_without_kv_heads_or_slots_is_an_error(shape):
    """Both are divisors in the kernels: a zero was a SIGFPE that killed the process."""
    cache = np.zeros(shape, np.float16)
    q = np.zeros((1, 2, 64), np.float32)
    one, cu = np.array([1], np.int32), np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match="at least 1"):
        _C.paged_attention(q, cache, cache, np.zeros((1, 1), np.int32), one, cu, 1.0)
    with pytest.raises(ValueError, match="at least 1"):
        _C.qkv_rope_cache(
            np.zeros((1, 2 * 64), np.float32),
            np.zeros(1, np.int64),
            np.ones(32, np.float32),
            False,
            np.zeros(1, np.int32),
            cache,
            cache,
            2,
        )


def test_long_prefill_in_many_tasks_and_every_isa_agrees(rng):
    """A 150-token prefill splits into query chunks (several tasks per kv head); the
    result matches the reference and every ISA gives the scalar path's bits (exp, the
    dot products and the accumulation are defined op by op)."""
    n_heads, n_kv, hd, bs = 6, 2, 64, 16
    ctx_lens, q_lens = [150, 40], [150, 7]
    k_cache, v_cache, tables, keys, values = build_cache(rng, ctx_lens, n_kv, hd, bs, num_blocks=40)
    q = (rng.standard_normal((157, n_heads, hd)) * 3).astype(np.float32)
    cu = np.array([0, 150, 157], np.int32)
    args = (q, k_cache, v_cache, tables, np.array(ctx_lens, np.int32), cu, hd**-0.5)
    _C.set_isa("scalar")
    want = _C.paged_attention(*args)
    np.testing.assert_allclose(
        want, reference_attention(q, keys, values, q_lens, hd**-0.5), rtol=2e-4, atol=2e-5
    )
    gu = (rng.standard_normal((9, 2 * 200)) * 30).astype(np.float32)
    act = _C.gated_act(gu)
    for isa in ISAS:
        _C.set_isa(isa)
        np.testing.assert_array_equal(_C.paged_attention(*args), want, err_msg=isa)
        np.testing.assert_array_equal(_C.gated_act(gu), act, err_msg=isa)


def test_long_context_key_splits_merge_exactly(rng):
    """Contexts beyond 512 keys are processed in key splits merged afterwards: the result
    matches the reference, and a query's bits do not depend on the rest of its batch or
    on how its sequence was chunked (split points are fixed positions)."""
    n_heads, n_kv, hd, bs = 4, 2, 64, 16
    ctx = 1100
    k_cache, v_cache, tables, keys, values = build_cache(rng, [ctx], n_kv, hd, bs, num_blocks=80)
    q = (rng.standard_normal((ctx, n_heads, hd)) * 2).astype(np.float32)

    def attend(q_rows, q_lens, ctx_lens):
        cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
        tab = np.repeat(tables, len(q_lens), axis=0)
        return _C.paged_attention(
            q_rows, k_cache, v_cache, tab, np.array(ctx_lens, np.int32), cu, hd**-0.5
        )

    whole = attend(q, [ctx], [ctx])  # one prefill of all 1100 tokens
    want = reference_attention(q[-40:], keys, values, [40], hd**-0.5)
    np.testing.assert_allclose(whole[-40:], want, rtol=2e-4, atol=2e-5)
    # The last 40 queries as a chunk over the cached prefix, and the last one as a decode
    # step batched with a short sequence: the same bits as in the whole prefill.
    np.testing.assert_array_equal(attend(q[-40:], [40], [ctx]), whole[-40:])
    pair = attend(np.concatenate([q[-1:], q[:3]]), [1, 3], [ctx, 3])
    np.testing.assert_array_equal(pair[:1], whole[-1:])
    np.testing.assert_array_equal(pair[1:], whole[:3])
