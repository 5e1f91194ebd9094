"""Paged attention over lutlm's KV cache, and the cache write.

Cache layout (the CPU one, docs/ARCHITECTURE.md): per layer K and V fp16
[num_blocks, block_size, n_kv_heads, head_dim]; token j of sequence s lives in block
block_tables[s, j // block_size] at offset j % block_size. Slot and block offsets are
formed in int64: num_blocks * block_size * n_kv_heads * head_dim passes 2^31 on large
caches (e.g. 40k blocks of 16 x 8 x 128 values).

- ``write_kv``: k and v rows of the fused qkv output to their slots (slot -1: skip).
- Decode (sequences with one new token): one program per (sequence, kv head, KV split)
  computes all the kv head's query heads at once (GQA: each K/V tile is read once for the
  group, padded to 16 rows for tl.dot), with an online softmax over its share of the
  context. With several splits each program writes its unnormalised output, running max
  and sum, and ``_reduce_kernel`` merges the splits: a long context is then spread over
  many SMs even at batch 1.
- Prefill / chunked prefill (sequences with several new tokens): one program per
  (tile of BLOCK_M new tokens, query head), causal over the cached prefix plus the new
  tokens, all read from the paged cache after ``write_kv`` (so a prefix-cache hit or an
  earlier chunk is just more cached tokens).

Scores and softmax are fp32; Q and P enter tl.dot as fp16, like K and V.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from ._runtime import interpreting, next_pow2


@triton.jit
def _write_kv_kernel(
    qkv_ptr, slot_ptr, kc_ptr, vc_ptr, stride_t, K_OFF, V_OFF, KVW, BLOCK: tl.constexpr
):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    # (the slot test broadcast to a vector: the interpreter rejects a scalar-vector mask)
    mask = (offs < KVW) & ((offs * 0 + slot) >= 0)
    k = tl.load(qkv_ptr + t * stride_t + K_OFF + offs, mask=mask, other=0.0)
    v = tl.load(qkv_ptr + t * stride_t + V_OFF + offs, mask=mask, other=0.0)
    tl.store(kc_ptr + slot * KVW + offs, k.to(tl.float16), mask=mask)
    tl.store(vc_ptr + slot * KVW + offs, v.to(tl.float16), mask=mask)


def write_kv(
    qkv: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    num_heads: int,
) -> None:
    """Store the k and v parts of qkv [T, (num_heads + 2 kv) * hd] at their cache slots.

    Args:
        slot_mapping: int32 [T] on the cache's device; negative = skip the token.
    """
    nkv, hd = k_cache.shape[2], k_cache.shape[3]
    kvw = nkv * hd
    T = qkv.shape[0]
    if qkv.ndim != 2 or qkv.stride(1) != 1 or qkv.shape[1] != num_heads * hd + 2 * kvw:
        raise ValueError(f"qkv must be [T, {num_heads * hd + 2 * kvw}] with contiguous rows")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    block = min(1024, next_pow2(kvw))
    if T:
        _write_kv_kernel[(T, triton.cdiv(kvw, block))](
            qkv,
            slot_mapping,
            k_cache,
            v_cache,
            qkv.stride(0),
            num_heads * hd,
            num_heads * hd + kvw,
            kvw,
            BLOCK=block,
        )


@triton.jit
def _decode_kernel(
    q_ptr,
    kc_ptr,
    vc_ptr,
    bt_ptr,
    ctx_ptr,
    seq_ptr,
    tok_ptr,
    out_ptr,
    mp_ptr,
    lp_ptr,
    op_ptr,
    scale,
    stride_q,
    stride_bt,
    stride_o,
    H,
    KV,
    G,
    HD,
    BS,
    SPLIT_TOKENS,
    NUM_SPLITS,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SPLIT: tl.constexpr,
):
    i, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    seq = tl.load(seq_ptr + i).to(tl.int64)
    tok = tl.load(tok_ptr + i).to(tl.int64)
    ctx = tl.load(ctx_ptr + seq)
    lo = split * SPLIT_TOKENS
    hi = tl.minimum(lo + SPLIT_TOKENS, ctx)
    heads = kvh * G + tl.arange(0, BLOCK_H)
    hmask = tl.arange(0, BLOCK_H) < G
    d = tl.arange(0, BLOCK_D)
    dmask = d < HD
    q = tl.load(
        q_ptr + tok * stride_q + heads[:, None] * HD + d[None, :],
        mask=hmask[:, None] & dmask[None, :],
        other=0.0,
    )
    q = (q * scale).to(tl.float16)
    m_i = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_D), tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        j = n0 + tl.arange(0, BLOCK_N)
        valid = j < hi
        blk = tl.load(bt_ptr + seq * stride_bt + j // BS, mask=valid, other=0).to(tl.int64)
        row = ((blk * BS + j % BS) * KV + kvh) * HD
        kvmask = valid[:, None] & dmask[None, :]
        k = tl.load(kc_ptr + row[:, None] + d[None, :], mask=kvmask, other=0.0)
        s = tl.dot(q, tl.trans(k))
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        v = tl.load(vc_ptr + row[:, None] + d[None, :], mask=kvmask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
    omask = hmask[:, None] & dmask[None, :]
    if SPLIT:
        # [decode seq, head, split]; an empty split leaves m = -inf, l = 0, o = 0.
        part = (i.to(tl.int64) * H + heads) * NUM_SPLITS + split
        tl.store(mp_ptr + part, m_i, mask=hmask)
        tl.store(lp_ptr + part, l_i, mask=hmask)
        tl.store(op_ptr + part[:, None] * HD + d[None, :], acc, mask=omask)
    else:
        out = out_ptr + tok * stride_o + heads[:, None] * HD + d[None, :]
        tl.store(out, acc / l_i[:, None], mask=omask)


@triton.jit
def _reduce_kernel(
    mp_ptr,
    lp_ptr,
    op_ptr,
    tok_ptr,
    out_ptr,
    stride_o,
    H,
    HD,
    NUM_SPLITS,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i, h = tl.program_id(0).to(tl.int64), tl.program_id(1)
    tok = tl.load(tok_ptr + i).to(tl.int64)
    sp = tl.arange(0, BLOCK_S)
    smask = sp < NUM_SPLITS
    part = (i * H + h) * NUM_SPLITS + sp
    m = tl.load(mp_ptr + part, mask=smask, other=float("-inf"))
    l_s = tl.load(lp_ptr + part, mask=smask, other=0.0)
    m_max = tl.max(m, axis=0)  # finite: split 0 always holds the first token
    w = tl.where(smask & (l_s > 0), tl.exp(m - m_max), 0.0)
    d = tl.arange(0, BLOCK_D)
    o = tl.load(
        op_ptr + part[:, None] * HD + d[None, :], mask=smask[:, None] & (d < HD)[None, :], other=0.0
    )
    res = tl.sum(w[:, None] * o, axis=0) / tl.sum(w * l_s, axis=0)
    tl.store(out_ptr + tok * stride_o + h * HD + d, res, mask=d < HD)


@triton.jit
def _prefill_kernel(
    q_ptr,
    kc_ptr,
    vc_ptr,
    bt_ptr,
    ctx_ptr,
    cu_ptr,
    tseq_ptr,
    tstart_ptr,
    out_ptr,
    scale,
    stride_q,
    stride_bt,
    stride_o,
    KV,
    G,
    HD,
    BS,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    tile, h = tl.program_id(0), tl.program_id(1)
    seq = tl.load(tseq_ptr + tile).to(tl.int64)
    start = tl.load(tstart_ptr + tile)
    q0 = tl.load(cu_ptr + seq)
    q_len = tl.load(cu_ptr + seq + 1) - q0
    ctx = tl.load(ctx_ptr + seq)
    prefix = ctx - q_len
    kvh = h // G
    mi = start + tl.arange(0, BLOCK_M)
    mmask = mi < q_len
    q_pos = prefix + mi
    d = tl.arange(0, BLOCK_D)
    dmask = d < HD
    rows = (q0 + mi).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * stride_q + h * HD + d[None, :],
        mask=mmask[:, None] & dmask[None, :],
        other=0.0,
    )
    q = (q * scale).to(tl.float16)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    # Causal: the tile's last query sees keys up to its own position.
    hi = tl.minimum(ctx, prefix + start + BLOCK_M)
    for n0 in range(0, hi, BLOCK_N):
        j = n0 + tl.arange(0, BLOCK_N)
        valid = j < hi
        blk = tl.load(bt_ptr + seq * stride_bt + j // BS, mask=valid, other=0).to(tl.int64)
        row = ((blk * BS + j % BS) * KV + kvh) * HD
        kvmask = valid[:, None] & dmask[None, :]
        k = tl.load(kc_ptr + row[:, None] + d[None, :], mask=kvmask, other=0.0)
        s = tl.dot(q, tl.trans(k))
        # Key 0 is visible to every row, so no row's maximum stays -inf.
        s = tl.where(valid[None, :] & (j[None, :] <= q_pos[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        v = tl.load(vc_ptr + row[:, None] + d[None, :], mask=kvmask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
    out = out_ptr + rows[:, None] * stride_o + h * HD + d[None, :]
    tl.store(out, acc / l_i[:, None], mask=mmask[:, None] & dmask[None, :])


# Compiled for sm_90 (kernels/aot_check.py), 64-key tiles at head dim 128 spill registers
# with 4 warps in both kernels and fit in 242 (decode) / 249 (prefill) with 8.
ATTENTION_WARPS = 8


@dataclass
class AttentionPlan:
    """Which kernels cover which sequences in one forward step; built once per step on
    the host (the batch's metadata is there) and shared by every layer."""

    decode_seqs: torch.Tensor  # int32 [D]: sequences with one new token
    decode_toks: torch.Tensor  # int32 [D]: their token rows
    tile_seqs: torch.Tensor  # int32 [P]: prefill tiles: sequence
    tile_starts: torch.Tensor  # int32 [P]: first new token of the tile (within the sequence)
    num_splits: int
    split_tokens: int
    block_m: int
    block_n: int

    @classmethod
    def build(
        cls,
        cu_seqlens_q: np.ndarray,
        context_lens: np.ndarray,
        device: str | torch.device,
        num_splits: int | None = None,
        block_m: int | None = None,
        block_n: int | None = None,
    ) -> AttentionPlan:
        """Args:
        num_splits: KV splits for decode; None picks about one per 512 tokens of the
            longest decode context (at most 32) on a GPU, one in the interpreter.
        block_m, block_n: prefill query tile and key tile (default 64 on a GPU, 16 in
            the interpreter; block_n is also decode's key tile).
        """
        cu = np.asarray(cu_seqlens_q, np.int64)
        ctx = np.asarray(context_lens, np.int64)
        q_len = np.diff(cu)
        if (q_len < 0).any() or (ctx < q_len).any():
            raise ValueError("need 0 <= q_len <= context_len for every sequence")
        interp = interpreting()
        block_m = block_m or (16 if interp else 64)
        block_n = block_n or (16 if interp else 64)
        dec = np.flatnonzero(q_len == 1)
        pre = np.flatnonzero(q_len > 1)
        starts = [np.arange(0, q_len[s], block_m) for s in pre]
        tile_seqs = np.zeros(0, np.int64)
        tile_starts = np.zeros(0, np.int64)
        if starts:
            tile_seqs = np.repeat(pre, [len(t) for t in starts])
            tile_starts = np.concatenate(starts)
        max_ctx = int(ctx[dec].max()) if len(dec) else 0
        if num_splits is None:
            num_splits = 1 if interp else min(32, max(1, -(-max_ctx // 512)))
        num_splits = max(1, min(num_splits, -(-max(max_ctx, 1) // block_n)))
        split_tokens = -(-max(max_ctx, 1) // (num_splits * block_n)) * block_n

        def dev(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, np.int32)).to(device)

        return cls(
            dev(dec),
            dev(cu[dec]),
            dev(tile_seqs),
            dev(tile_starts),
            num_splits,
            split_tokens,
            block_m,
            block_n,
        )


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    scale: float,
    num_heads: int,
    plan: AttentionPlan,
) -> torch.Tensor:
    """Attention of the new tokens over their sequences' cached keys and values.

    Args:
        q: [T, >= num_heads * hd] (rows contiguous; the q part of the qkv rows), after RoPE.
        k_cache, v_cache: fp16 [num_blocks, block_size, n_kv_heads, hd], the new tokens
            already written (:func:`write_kv`).
        block_tables: int32 [S, max_blocks]; context_lens int32 [S]; cu_seqlens_q int32
            [S + 1], all on the device. Sequence s's new tokens are its last q_len.
        plan: from :meth:`AttentionPlan.build` on the same batch.

    Returns:
        fp32 [T, num_heads * hd].
    """
    _, BS, KV, HD = k_cache.shape
    T = q.shape[0]
    if q.stride(1) != 1 or q.shape[1] < num_heads * HD or num_heads % KV:
        raise ValueError("q must have contiguous rows of >= num_heads * head_dim values")
    if block_tables.stride(1) != 1:
        block_tables = block_tables.contiguous()
    G = num_heads // KV
    out = torch.empty((T, num_heads * HD), device=q.device, dtype=torch.float32)
    BD = max(16, next_pow2(HD))
    n_dec = plan.decode_seqs.numel()
    if n_dec:
        splits = plan.num_splits
        if splits > 1:
            mp = torch.empty((n_dec, num_heads, splits), device=q.device, dtype=torch.float32)
            lp = torch.empty_like(mp)
            op = torch.empty((n_dec, num_heads, splits, HD), device=q.device, dtype=torch.float32)
        else:
            mp = lp = op = out  # unused
        _decode_kernel[(n_dec, KV, splits)](
            q,
            k_cache,
            v_cache,
            block_tables,
            context_lens,
            plan.decode_seqs,
            plan.decode_toks,
            out,
            mp,
            lp,
            op,
            scale,
            q.stride(0),
            block_tables.stride(0),
            out.stride(0),
            num_heads,
            KV,
            G,
            HD,
            BS,
            plan.split_tokens,
            splits,
            BLOCK_H=max(16, next_pow2(G)),
            BLOCK_N=plan.block_n,
            BLOCK_D=BD,
            SPLIT=splits > 1,
            num_warps=ATTENTION_WARPS,
        )
        if splits > 1:
            _reduce_kernel[(n_dec, num_heads)](
                mp,
                lp,
                op,
                plan.decode_toks,
                out,
                out.stride(0),
                num_heads,
                HD,
                splits,
                BLOCK_S=next_pow2(splits),
                BLOCK_D=BD,
            )
    n_tiles = plan.tile_seqs.numel()
    if n_tiles:
        _prefill_kernel[(n_tiles, num_heads)](
            q,
            k_cache,
            v_cache,
            block_tables,
            context_lens,
            cu_seqlens_q,
            plan.tile_seqs,
            plan.tile_starts,
            out,
            scale,
            q.stride(0),
            block_tables.stride(0),
            out.stride(0),
            KV,
            G,
            HD,
            BS,
            BLOCK_M=plan.block_m,
            BLOCK_N=plan.block_n,
            BLOCK_D=BD,
            num_warps=ATTENTION_WARPS,
        )
    return out
