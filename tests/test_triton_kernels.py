"""lutlm.kernels (Triton) against numpy references written here.

CI has no GPU: the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1,
set below before triton is imported), at small shapes. On a GPU machine run
``TRITON_INTERPRET=0 pytest tests/test_triton_kernels.py`` to compile them for the card;
the full-size cases run only there.

Tolerances: the GEMM kernels round activations and dequantized weights to fp16 before
tl.dot (relative error about 2^-11 each, so about 1e-3 of the output's scale after
accumulation); the GEMV kernels stay fp32 (1e-5). Attention rounds Q and the
probabilities to fp16 for tl.dot, K and V are fp16 in the cache in both kernel and
reference: outputs (convex combinations of V rows of size ~1) within 3e-3.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from .triton_assets import require_triton

require_triton()

import torch  # noqa: E402

from lutlm.kernels import (  # noqa: E402
    AttentionPlan,
    add_rms_norm,
    gated_act,
    interpreting,
    pack_quant,
    paged_attention,
    quant_matmul,
    rms_norm,
    rope,
    rope_cos_sin,
    write_kv,
)

DEVICE = "cpu" if interpreting() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 but torch sees no CUDA GPU", allow_module_level=True)
gpu_only = pytest.mark.skipif(DEVICE != "cuda", reason="full-size shapes: compiled, GPU only")


def t(a: np.ndarray) -> torch.Tensor:
    """A copy on DEVICE (kernels that work in place must not change the test's arrays)."""
    return torch.from_numpy(np.array(a, order="C")).to(DEVICE)


def host(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy()


# ---------------------------------------------------------------- low-bit GEMM / GEMV

ZERO = {"int4": 8, "int8": 128, "ternary": 1}
TOP = {"int4": 16, "int8": 256, "ternary": 3}


def random_weight(rng, fmt, N, K, gs, with_min):
    """Codes, fp16-exact scales (and minimums) and the float matrix they stand for."""
    codes = rng.integers(0, TOP[fmt], (N, K)).astype(np.uint8)
    if fmt == "ternary":
        d = (rng.random(N) * 0.1 + 0.01).astype(np.float32)
        return codes, d, None, (codes.astype(np.float32) - 1) * d[:, None]
    G = -(-K // gs)
    d = (rng.random((N, G)) * 0.1 + 0.01).astype(np.float16).astype(np.float32)
    m = None
    dk = np.repeat(d, gs, axis=1)[:, :K]
    mk = -ZERO[fmt] * dk
    if with_min:
        m = (rng.standard_normal((N, G)) * 0.1).astype(np.float16).astype(np.float32)
        mk = np.repeat(m, gs, axis=1)[:, :K]
    return codes, d, m, codes * dk + mk


GEMM_CASES = [  # fmt, group size, minimum (Q4_1), N, K: ragged N and K everywhere
    ("int4", 32, False, 37, 200),  # Q4_0
    ("int4", 64, True, 50, 160),  # Q4_1-style, group 64
    ("ternary", None, False, 45, 300),
    ("int8", 32, False, 29, 96),
]


@pytest.mark.parametrize("fmt,gs,with_min,N,K", GEMM_CASES)
def test_quant_matmul_matches_float_reference(fmt, gs, with_min, N, K):
    rng = np.random.default_rng(0)
    codes, d, m, W = random_weight(rng, fmt, N, K, gs, with_min)
    w = pack_quant(codes, d, m, gs, fmt, DEVICE)
    kernels = ["gemm", "dequant"] + (["lut"] if fmt != "int8" else [])
    for M in (1, 19):
        x = rng.standard_normal((M, K)).astype(np.float32)
        ref = x @ W.T
        for kernel in kernels:
            if M > 3 and kernel != "gemm":
                continue  # one program per row: the interpreter pays per row, nothing new
            # Fixed default tiles (BLOCK_K 32: within one group), then a split-K tiling
            # whose last split is ragged, with BLOCK_K 128 spanning several groups (the
            # LUT kernel needs BLOCK_K to divide the group size).
            split = {"BLOCK_N": 16, "BLOCK_K": 32 if kernel == "lut" else 128, "SPLIT_K": 3}
            if kernel == "gemm":
                split["BLOCK_M"] = 16
            for config in (None, split):
                y = host(quant_matmul(t(x), w, kernel=kernel, config=config))
                tol = 2e-3 if kernel == "gemm" else 1e-5
                err = np.abs(y - ref).max() / np.abs(ref).max()
                assert err < tol, (kernel, M, config, err)


def test_quant_matmul_auto_dispatch_and_errors():
    rng = np.random.default_rng(1)
    codes, d, _, W = random_weight(rng, "int8", 8, 64, 32, False)
    w = pack_quant(codes, d, None, 32, "int8", DEVICE)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(host(quant_matmul(t(x), w)), x @ W.T, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="ternary and INT4"):
        quant_matmul(t(x), w, kernel="lut")
    with pytest.raises(ValueError, match="must be"):
        quant_matmul(t(x[:, :32]), w)
    with pytest.raises(ValueError, match="below 16"):
        pack_quant(np.full((2, 32), 16, np.uint8), np.ones((2, 1)), None, 32, "int4", DEVICE)


@gpu_only
@pytest.mark.parametrize("fmt", ["int4", "ternary"])
@pytest.mark.parametrize("M", [1, 8, 32, 300])
def test_quant_matmul_full_size_autotuned(fmt, M):
    rng = np.random.default_rng(2)
    N, K = 4096, 4096
    codes, d, m, W = random_weight(rng, fmt, N, K, 32, fmt == "int4")
    w = pack_quant(codes, d, m, 32, fmt, DEVICE)
    x = rng.standard_normal((M, K)).astype(np.float32)
    ref = x.astype(np.float64) @ W.T.astype(np.float64)
    for kernel in ("auto", "gemm") + (("dequant", "lut") if M <= 8 else ()):
        y = host(quant_matmul(t(x), w, kernel=kernel))
        assert np.abs(y - ref).max() / np.abs(ref).max() < 2e-3, kernel


# ---------------------------------------------------------------- paged attention


def attention_reference(q, k, v, q_pos, n_heads, n_kv):
    """Causal softmax attention of q [H, hd] at position q_pos over k, v [ctx, KV, hd]."""
    g = n_heads // n_kv
    out = np.zeros_like(q)
    for h in range(n_heads):
        kk = k[: q_pos + 1, h // g].astype(np.float32)
        s = kk @ q[h] / np.sqrt(q.shape[-1])
        p = np.exp(s - s.max())
        out[h] = (p / p.sum()) @ v[: q_pos + 1, h // g].astype(np.float32)
    return out


def run_attention(
    rng, H, KV, HD, q_lens, ctx_lens, num_blocks, bs=16, num_splits=None, blocks=None
):
    """Write a random prefix into the cache, write the new tokens with write_kv, run
    paged_attention over shuffled block tables and compare with attention_reference."""
    S, T = len(q_lens), sum(q_lens)
    max_blocks = max(-(-c // bs) for c in ctx_lens)
    if blocks is None:  # non-contiguous, shuffled tables
        blocks = rng.permutation(num_blocks)[: S * max_blocks].reshape(S, max_blocks)
    blocks = np.asarray(blocks, np.int32)
    k_cache = torch.zeros((num_blocks, bs, KV, HD), dtype=torch.float16, device=DEVICE)
    v_cache = torch.zeros_like(k_cache)
    ks = [rng.standard_normal((c, KV, HD)).astype(np.float16) for c in ctx_lens]
    vs = [rng.standard_normal((c, KV, HD)).astype(np.float16) for c in ctx_lens]
    cu = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    qkv = np.zeros((T, (H + 2 * KV) * HD), np.float32)
    slots = np.zeros(T, np.int32)
    for s in range(S):
        prefix = ctx_lens[s] - q_lens[s]
        for j in range(prefix):  # cached earlier
            k_cache[int(blocks[s, j // bs]), j % bs] = t(ks[s][j])
            v_cache[int(blocks[s, j // bs]), j % bs] = t(vs[s][j])
        for i in range(q_lens[s]):
            j, row = prefix + i, cu[s] + i
            qkv[row, : H * HD] = rng.standard_normal(H * HD)
            qkv[row, H * HD : (H + KV) * HD] = ks[s][j].ravel()
            qkv[row, (H + KV) * HD :] = vs[s][j].ravel()
            slots[row] = blocks[s, j // bs] * bs + j % bs
    qkv_t = t(qkv)
    write_kv(qkv_t, t(slots), k_cache, v_cache, H)
    plan = AttentionPlan.build(cu, np.asarray(ctx_lens), DEVICE, num_splits=num_splits)
    out = paged_attention(
        qkv_t, k_cache, v_cache, t(blocks), t(np.int32(ctx_lens)), t(cu), HD**-0.5, H, plan
    )
    out = host(out).reshape(T, H, HD)
    for s in range(S):
        for i in range(q_lens[s]):
            row = cu[s] + i
            q = qkv[row, : H * HD].reshape(H, HD)
            ref = attention_reference(q, ks[s], vs[s], ctx_lens[s] - q_lens[s] + i, H, KV)
            np.testing.assert_allclose(out[row], ref, atol=3e-3, err_msg=f"seq {s} row {i}")
    return plan


@pytest.mark.parametrize(
    "H,KV,HD",
    [(4, 4, 64), (8, 2, 128), (5, 1, 64)],  # GQA ratios 1, 4, 5; head dims 64, 128
)
def test_paged_attention_mixed_prefill_and_decode(H, KV, HD):
    rng = np.random.default_rng(H * 100 + HD)
    # decode of a 1-token context, a fresh 18-token prefill (ragged tile), decode over
    # three blocks, a 5-token chunk after a 28-token cached prefix (prefix hit / chunk).
    plan = run_attention(rng, H, KV, HD, [1, 18, 1, 5], [1, 18, 40, 33], num_blocks=24)
    assert plan.decode_seqs.numel() == 2 and plan.tile_seqs.numel() == 3


def test_paged_attention_split_kv_decode_matches_unsplit():
    q_lens, ctx = [1, 1, 1], [300, 65, 17]  # splits beyond the short contexts stay empty
    for splits in (1, 5):
        rng = np.random.default_rng(7)
        plan = run_attention(rng, 4, 2, 64, q_lens, ctx, 64, num_splits=splits)
        assert plan.num_splits == splits


def test_paged_attention_block_offsets_past_int32():
    """A cache of more than 2^31 values per layer (vLLM's "large number of blocks" case):
    slot and block offsets must be int64. The cache is allocated, not touched, so only
    the pages of the used blocks are ever committed."""
    KV, HD, bs = 1, 64, 16
    num_blocks = (1 << 31) // (bs * KV * HD) + 64
    rng = np.random.default_rng(3)
    top = [num_blocks - 1, 5, num_blocks - 40]  # the last block among them
    k_cache = torch.empty((num_blocks, bs, KV, HD), dtype=torch.float16, device=DEVICE)
    assert k_cache.numel() > 2**31
    v_cache = torch.empty_like(k_cache)
    H, T = 2, 40
    qkv = rng.standard_normal((T, (H + 2 * KV) * HD)).astype(np.float32)
    pos = np.arange(T)
    table = np.array([top], np.int32)
    slots = (table[0, pos // bs].astype(np.int64) * bs + pos % bs).astype(np.int32)
    write_kv(t(qkv), t(slots), k_cache, v_cache, H)
    cu, ctx = np.array([0, T], np.int32), np.array([T], np.int32)
    plan = AttentionPlan.build(cu, ctx, DEVICE)
    out = host(
        paged_attention(t(qkv), k_cache, v_cache, t(table), t(ctx), t(cu), HD**-0.5, H, plan)
    ).reshape(T, H, HD)
    k = qkv[:, H * HD : (H + KV) * HD].reshape(T, KV, HD).astype(np.float16)
    v = qkv[:, (H + KV) * HD :].reshape(T, KV, HD).astype(np.float16)
    for i in (0, 17, T - 1):
        ref = attention_reference(qkv[i, : H * HD].reshape(H, HD), k, v, i, H, KV)
        np.testing.assert_allclose(out[i], ref, atol=3e-3)


@gpu_only
def test_paged_attention_full_size_long_context():
    rng = np.random.default_rng(4)
    run_attention(rng, 32, 8, 128, [1, 1, 300, 1], [4000, 1, 900, 2048], num_blocks=1024)


# ---------------------------------------------------------------- layer ops


def test_rms_norm_and_add_rms_norm():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 200)).astype(np.float32)  # ragged D: 200 in a 256 block
    w = rng.standard_normal(200).astype(np.float32)
    delta = rng.standard_normal((5, 200)).astype(np.float32)

    def ref(a):
        return a / np.sqrt((a.astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-5) * w

    np.testing.assert_allclose(host(rms_norm(t(x), t(w), 1e-5)), ref(x), rtol=1e-5, atol=1e-5)
    h = t(x)
    y = host(add_rms_norm(h, t(delta), t(w), 1e-5))
    np.testing.assert_array_equal(host(h), x + delta)  # the residual, updated in place
    np.testing.assert_allclose(y, ref(x + delta), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # numpy, interpreter
def test_gated_act_silu_and_relu2():
    rng = np.random.default_rng(6)
    gu = (rng.standard_normal((3, 2 * 70)) * 5).astype(np.float32)
    gu[0, 0] = -100.0  # exp(-g) overflows: SiLU must still give -0, not NaN
    g, u = gu[:, :70].astype(np.float64), gu[:, 70:]
    silu = host(gated_act(t(gu)))
    np.testing.assert_allclose(silu, g / (1 + np.exp(-g)) * u, rtol=1e-5, atol=1e-6)
    relu2 = host(gated_act(t(gu), relu2=True))
    np.testing.assert_allclose(relu2, np.maximum(g, 0) ** 2 * u, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_neox_and_interleaved(interleaved):
    rng = np.random.default_rng(8)
    T, H, KV, hd = 4, 3, 1, 16
    x = rng.standard_normal((T, (H + 2 * KV) * hd)).astype(np.float32)
    pos = np.array([0, 1, 700, 4095])
    inv = (1.0 / 10000 ** (np.arange(0, hd, 2) / hd)).astype(np.float32)
    xt = t(x)
    rope(xt, t(pos), rope_cos_sin(inv, 4096, DEVICE), H + KV, hd, interleaved)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    heads = x[:, : (H + KV) * hd].reshape(T, H + KV, hd).astype(np.float64)
    if interleaved:
        a, b = heads[..., 0::2], heads[..., 1::2]
        ref = np.stack([a * c - b * s, b * c + a * s], axis=-1).reshape(heads.shape)
    else:
        a, b = heads[..., : hd // 2], heads[..., hd // 2 :]
        ref = np.concatenate([a * c - b * s, b * c + a * s], axis=-1)
    got = host(xt)
    np.testing.assert_allclose(got[:, : (H + KV) * hd].reshape(ref.shape), ref, atol=1e-5)
    np.testing.assert_array_equal(got[:, (H + KV) * hd :], x[:, (H + KV) * hd :])  # v untouched


# ---------------------------------------------------------------- compiled for a GPU


def test_kernels_compile_for_sm90_without_a_gpu():
    """What the interpreter cannot show: every kernel variant goes through Triton's whole
    compiler to an sm_90 cubin (kernels/aot_check.py; needs no GPU, only the ptxas in the
    triton wheel), e.g. tl.dot shapes, layouts and constexpr use are accepted."""
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip(f"this triton has no bundled ptxas ({ptxas})")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lutlm.kernels.aot_check", "--arch", "90"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and proc.stdout.strip().endswith("0 failed"), out
    # Register spills would cost the memory bandwidth these kernels exist to save (the
    # check compiles the largest tiles of each autotune space).
    lines = [x for x in proc.stdout.splitlines() if x.startswith("ok ")]
    assert len(lines) >= 20 and all("regs, 0 B stack" in x for x in lines), out
