"""Low-bit weight GEMM/GEMV: y[M, N] = x[M, K] @ W.T for ternary, INT4 and INT8 weights.

GPU layout (made once at load by :func:`pack_quant`, from the integer codes and scales of
lutlm's CPU-packed weights):

- ``words`` int32 [Kp / CPW, N]: CPW = 32 / BITS unsigned codes of BITS bits, consecutive
  along K, in one 32-bit word, low bits first (code of k at bits BITS * (k % CPW) of word
  k // CPW). N is the contiguous dimension, so the threads of a program that cover
  consecutive outputs read consecutive words: coalesced loads at every M.
- ``d`` [G, N] per-group scale and optional ``m`` [G, N] per-group minimum: w = d * c + m.
  Without a minimum, m = -ZERO * d (ZERO = 8 for INT4, which is GGUF Q4_0's (c - 8) * d;
  128 for INT8 codes stored as q + 128; 1 for ternary codes t + 1).
- Ternary weights have one scale per row: a single group spanning the padded K, fp32
  (their scale is fp32 on the CPU too); INT4/INT8 group scales stay fp16, as loaded.

Bits per weight read: INT4 4 + 16/GS (+16/GS with a minimum), ternary 2, INT8 8 + 16/GS.

Three kernels:

- ``_gemm_kernel``: dequantize a [BLOCK_K, BLOCK_N] tile in registers to fp16, tl.dot
  with an fp16 activation tile (fp32 accumulate); split-K through fp32 atomics.
  For M above the GEMV threshold (batched decode, prefill).
- ``_gemv_dequant_kernel``: one activation row per program; the same in-register
  dequantization followed by a multiply and a column sum (no tensor cores: at one row
  they would idle 15/16 of the tile).
- ``_gemv_lut_kernel`` (+ ``_lut_build_kernel``): the lookup-table form of the CPU
  kernels. Each byte of ``words`` holds 8 / BITS codes; a table per activation row holds,
  for each byte position and each of its 256 values, sum_i x[k_i] * code_i. The GEMV then
  gathers one table entry per weight byte, sums a group's entries and applies the group's
  scale and minimum once (d * sum + m * sum(x)). Ternary and INT4 only.

Which GEMV is faster on a given card is what bench/gpu.py measures; until a GPU run has
been recorded the default is the dequantize-in-registers kernel (``GEMV_DEFAULT``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from ._runtime import interpreting, next_pow2, tuned

# Rows up to which the GEMV kernels run instead of the tl.dot GEMM (one program per row
# re-reads the weights from L2 for each extra row; tl.dot needs tiles of >= 16 rows).
GEMV_MAX_M = 4
GEMV_VARIANTS = ("dequant", "lut")
# Unmeasured on a GPU so far: see the module docstring and bench/gpu.py.
GEMV_DEFAULT = "dequant"
FORMATS = {"ternary": (2, 1), "int4": (4, 8), "int8": (8, 128)}  # -> (BITS, ZERO)


@dataclass
class QuantWeight:
    """A weight matrix [N, K] in the GPU layout described in the module docstring."""

    words: torch.Tensor  # int32 [Kp / (32 / bits), N]
    d: torch.Tensor  # [G, N] fp16 (INT4/INT8) or fp32 (ternary)
    m: torch.Tensor | None  # [G, N] like d, or None (m = -zero * d)
    shape: tuple[int, int]
    group_size: int
    bits: int
    zero: int

    @property
    def nbytes(self) -> int:
        extra = 0 if self.m is None else self.m.numel() * self.m.element_size()
        return int(self.words.numel() * 4 + self.d.numel() * self.d.element_size() + extra)


def pack_quant(
    codes: np.ndarray,
    d: np.ndarray,
    m: np.ndarray | None,
    group_size: int | None,
    fmt: str,
    device: str | torch.device,
) -> QuantWeight:
    """Pack unsigned codes [N, K] and scales [N, G] (minimums [N, G] or None) for the GPU.

    Args:
        codes: uint8 codes: INT4 0..15 (w = d * c + m, or d * (c - 8)), INT8 q + 128,
            ternary t + 1 in 0..2.
        d: per-group scales [N, G] (ternary: per-row scales [N] or [N, 1]).
        m: per-group minimums [N, G] (INT4 Q4_1 style) or None.
        group_size: 32, 64 or 128 for INT4/INT8; ignored for ternary (one group per row).
        fmt: "int4", "int8" or "ternary".
        device: where the packed tensors live.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {tuple(FORMATS)}, got {fmt!r}")
    bits, zero = FORMATS[fmt]
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [N, K], got shape {codes.shape}")
    N, K = codes.shape
    if codes.size and int(codes.max()) >= 1 << bits:
        raise ValueError(f"{fmt} codes must be below {1 << bits}, got {int(codes.max())}")
    if fmt == "ternary":
        # One group covering K padded to 128: a multiple of every kernel's BLOCK_K.
        group_size = -(-K // 128) * 128
        d = np.asarray(d, np.float32).reshape(N, 1)
        scale_dtype = torch.float32
    else:
        if group_size not in (32, 64, 128):
            raise ValueError(f"group_size must be 32, 64 or 128, got {group_size}")
        scale_dtype = torch.float16
    G = -(-K // group_size)
    Kp = G * group_size  # a multiple of 32, so of every CPW
    cpw = 32 // bits
    padded = np.zeros((Kp, N), np.uint32)
    padded[:K] = codes.T
    planes = (
        padded.reshape(Kp // cpw, cpw, N) << (bits * np.arange(cpw, dtype=np.uint32))[None, :, None]
    )
    words = np.bitwise_or.reduce(planes, axis=1).view(np.int32)

    def scales(a: np.ndarray, name: str) -> torch.Tensor:
        a = np.asarray(a, np.float32)
        if a.shape != (N, G):
            raise ValueError(f"{name} must have shape {(N, G)}, got {a.shape}")
        return torch.from_numpy(np.array(a.T, order="C")).to(device=device, dtype=scale_dtype)

    return QuantWeight(
        words=torch.from_numpy(np.ascontiguousarray(words)).to(device),
        d=scales(d, "d"),
        m=None if m is None else scales(m, "m"),
        shape=(int(N), int(K)),
        group_size=int(group_size),
        bits=bits,
        zero=zero,
    )


@triton.jit
def _dequant_tile(
    w_ptr,
    d_ptr,
    m_ptr,
    k0,
    offs_n,
    N,
    K,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    GS: tl.constexpr,
    BITS: tl.constexpr,
    ZERO: tl.constexpr,
    HAS_MIN: tl.constexpr,
):
    """Weights k0..k0+BLOCK_K x offs_n as fp32 d * c + m (0 outside K and N). GS = 0: one
    scale per row (ternary); else the group size, a constexpr so group boundaries are too."""
    CPW: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    WK: tl.constexpr = BLOCK_K // CPW  # words per column in the tile
    nmask = offs_n < N
    rows = k0 // CPW + tl.arange(0, WK)
    words = tl.load(
        w_ptr + rows[:, None].to(tl.int64) * N + offs_n[None, :],
        mask=(rows < tl.cdiv(K, CPW))[:, None] & nmask[None, :],
        other=0,
    )
    # Each word is loaded once and split in registers: [WK, CPW, BLOCK_N], k = w * CPW + j.
    # An arithmetic shift of a negative int32 smears the sign bit, which MASK drops again.
    c = (words[:, None, :] >> (tl.arange(0, CPW) * BITS)[None, :, None]) & MASK
    if GS == 0:
        d = tl.load(d_ptr + offs_n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        w = tl.reshape(c, (BLOCK_K, BLOCK_N)).to(tl.float32) * d - ZERO * d
    elif BLOCK_K <= GS:  # the tile lies in one group (k0 is a multiple of BLOCK_K)
        # (+ 0 * offs_n: a vector to cast, since k0 is a Python int when interpreted)
        g = (k0 // GS + 0 * offs_n).to(tl.int64) * N + offs_n
        d = tl.load(d_ptr + g, mask=nmask, other=0.0).to(tl.float32)[None, :]
        if HAS_MIN:
            mn = tl.load(m_ptr + g, mask=nmask, other=0.0).to(tl.float32)[None, :]
        else:
            mn = -ZERO * d
        w = tl.reshape(c, (BLOCK_K, BLOCK_N)).to(tl.float32) * d + mn
    else:  # BLOCK_K / GS whole groups
        NG: tl.constexpr = BLOCK_K // GS
        gi = k0 // GS + tl.arange(0, NG)
        g = gi[:, None].to(tl.int64) * N + offs_n[None, :]
        gmask = (gi * GS < K)[:, None] & nmask[None, :]
        d = tl.load(d_ptr + g, mask=gmask, other=0.0).to(tl.float32)
        if HAS_MIN:
            mn = tl.load(m_ptr + g, mask=gmask, other=0.0).to(tl.float32)
        else:
            mn = -ZERO * d
        cg = tl.reshape(c, (NG, GS, BLOCK_N)).to(tl.float32)
        w = tl.reshape(cg * d[:, None, :] + mn[:, None, :], (BLOCK_K, BLOCK_N))
    offs_k = k0 + tl.arange(0, BLOCK_K)
    return tl.where((offs_k < K)[:, None] & nmask[None, :], w, 0.0)


@triton.jit
def _gemm_kernel(
    x_ptr,
    w_ptr,
    d_ptr,
    m_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_ym,
    M_BUCKET,
    GS: tl.constexpr,
    BITS: tl.constexpr,
    ZERO: tl.constexpr,
    HAS_MIN: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_len = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * k_len
    k_hi = tl.minimum(k_lo + k_len, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :],
            mask=(offs_m < M)[:, None] & (offs_k < k_hi)[None, :],
            other=0.0,
        )
        w = _dequant_tile(
            w_ptr, d_ptr, m_ptr, k0, offs_n, N, k_hi, BLOCK_K, BLOCK_N, GS, BITS, ZERO, HAS_MIN
        )
        acc += tl.dot(x.to(tl.float16), w.to(tl.float16))
    y = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :]
    ymask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    if SPLIT_K == 1:
        tl.store(y, acc, mask=ymask)
    else:
        tl.atomic_add(y, acc, mask=ymask)


@triton.jit
def _gemv_dequant_kernel(
    x_ptr,
    w_ptr,
    d_ptr,
    m_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_ym,
    M_BUCKET,
    GS: tl.constexpr,
    BITS: tl.constexpr,
    ZERO: tl.constexpr,
    HAS_MIN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    pid_n, pid_k, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_len = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * k_len
    k_hi = tl.minimum(k_lo + k_len, K)
    acc = tl.zeros((BLOCK_N,), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + row.to(tl.int64) * stride_xm + offs_k, mask=offs_k < k_hi, other=0.0)
        w = _dequant_tile(
            w_ptr, d_ptr, m_ptr, k0, offs_n, N, k_hi, BLOCK_K, BLOCK_N, GS, BITS, ZERO, HAS_MIN
        )
        acc += tl.sum(x.to(tl.float32)[:, None] * w, axis=0)
    y = y_ptr + row.to(tl.int64) * stride_ym + offs_n
    if SPLIT_K == 1:
        tl.store(y, acc, mask=offs_n < N)
    else:
        tl.atomic_add(y, acc, mask=offs_n < N)


@triton.jit
def _lut_build_kernel(
    x_ptr, lut_ptr, K, NBYTES, stride_xm, BITS: tl.constexpr, BLOCK_B: tl.constexpr
):
    """lut[row, b, v] = sum_i x[row, b * CPB + i] * ((v >> BITS * i) & MASK), v in 0..255."""
    row, pid = tl.program_id(0), tl.program_id(1)
    CPB: tl.constexpr = 8 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    offs_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    v = tl.arange(0, 256)
    acc = tl.zeros((BLOCK_B, 256), tl.float32)
    for i in tl.static_range(CPB):
        k = offs_b * CPB + i
        xi = tl.load(x_ptr + row.to(tl.int64) * stride_xm + k, mask=k < K, other=0.0)
        acc += xi.to(tl.float32)[:, None] * ((v >> (BITS * i)) & MASK).to(tl.float32)[None, :]
    out = lut_ptr + (row.to(tl.int64) * NBYTES + offs_b[:, None]) * 256 + v[None, :]
    tl.store(out, acc, mask=(offs_b < NBYTES)[:, None])


@triton.jit
def _gemv_lut_kernel(
    x_ptr,
    lut_ptr,
    w_ptr,
    d_ptr,
    m_ptr,
    y_ptr,
    M,
    N,
    K,
    NBYTES,
    stride_xm,
    stride_ym,
    M_BUCKET,
    GS: tl.constexpr,
    BITS: tl.constexpr,
    ZERO: tl.constexpr,
    HAS_MIN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    # BLOCK_K divides the group size, so each K step lies in one group.
    pid_n, pid_k, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    CPB: tl.constexpr = 8 // BITS
    NB: tl.constexpr = BLOCK_K // CPB  # weight bytes per column per step
    NW: tl.constexpr = NB // 4  # words per column per step
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    k_len = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * k_len
    k_hi = tl.minimum(k_lo + k_len, K)
    lut_row = lut_ptr + row.to(tl.int64) * NBYTES * 256
    acc = tl.zeros((BLOCK_N,), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        wrow = k0 // (4 * CPB) + tl.arange(0, NW)
        words = tl.load(
            w_ptr + wrow[:, None].to(tl.int64) * N + offs_n[None, :],
            mask=(wrow < NBYTES // 4)[:, None] & nmask[None, :],
            other=0,
        )
        # Bytes b = 4 w + j of the step, split from each word in registers.
        byte = tl.reshape(
            (words[:, None, :] >> (tl.arange(0, 4) * 8)[None, :, None]) & 0xFF, (NB, BLOCK_N)
        )
        bpos = k0 // CPB + tl.arange(0, NB)
        bmask = (bpos < NBYTES)[:, None] & nmask[None, :]
        part = tl.sum(
            tl.load(lut_row + bpos[:, None].to(tl.int64) * 256 + byte, mask=bmask, other=0.0),
            axis=0,
        )
        offs_k = k0 + tl.arange(0, BLOCK_K)
        xs = tl.sum(
            tl.load(x_ptr + row.to(tl.int64) * stride_xm + offs_k, mask=offs_k < K, other=0.0).to(
                tl.float32
            ),
            axis=0,
        )
        if GS == 0:  # one scale per row
            g = offs_n.to(tl.int64)
        else:
            g = (k0 // GS + 0 * offs_n).to(tl.int64) * N + offs_n  # as in _dequant_tile
        d = tl.load(d_ptr + g, mask=nmask, other=0.0).to(tl.float32)
        if HAS_MIN:
            mn = tl.load(m_ptr + g, mask=nmask, other=0.0).to(tl.float32)
        else:
            mn = -ZERO * d
        acc += d * part + mn * xs
    y = y_ptr + row.to(tl.int64) * stride_ym + offs_n
    if SPLIT_K == 1:
        tl.store(y, acc, mask=nmask)
    else:
        tl.atomic_add(y, acc, mask=nmask)


def _configs(tiles: list[tuple[int, ...]], names: tuple[str, ...]) -> list:
    """triton.Configs from tuples of the named sizes followed by num_warps."""
    return [triton.Config(dict(zip(names, t[:-1], strict=True)), num_warps=t[-1]) for t in tiles]


# Autotune spaces: tiles that compile for sm_90 without register spills at every format
# (python -m lutlm.kernels.aot_check --all); the in-register dequantization needs 8 warps
# beyond about 4096 weights per tile. Which of them wins is measured on the card.
GEMM_TILES = [  # BLOCK_M, BLOCK_N, BLOCK_K, warps
    (16, 64, 64, 4),
    (16, 64, 64, 8),
    (32, 64, 64, 8),
    (64, 64, 64, 8),
    (64, 128, 64, 8),
    (128, 64, 64, 8),
]
GEMV_TILES = [  # BLOCK_N, BLOCK_K, warps
    (32, 64, 4),
    (64, 64, 4),
    (128, 64, 4),
    (32, 128, 4),
    (64, 128, 8),
    (128, 128, 8),
    (256, 64, 8),
    (32, 256, 8),
]
LUT_TILES = [(bn, 32, 4) for bn in (32, 64, 128, 256)]  # BLOCK_K 32 divides every group
# INT8 (LM heads) spills 8-40 bytes in these two GEMM tiles; the autotuner skips them there.
_INT8_SPILLING_GEMM_TILES = {(32, 64, 64), (64, 128, 64)}


def gemm_tile_allowed(bits: int, block_m: int, block_n: int, block_k: int) -> bool:
    return not (bits == 8 and (block_m, block_n, block_k) in _INT8_SPILLING_GEMM_TILES)


def _prune_gemm(configs: list, named_args: dict, **kwargs: object) -> list:
    bits = int(kwargs.get("BITS", named_args.get("BITS", 4)))
    return [
        c
        for c in configs
        if gemm_tile_allowed(bits, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"])
    ]


_KEY = ["M_BUCKET", "N", "K", "GS", "BITS"]
_gemm_tuned = tuned(
    _gemm_kernel,
    _configs(
        [(bm, bn, bk, sk, w) for bm, bn, bk, w in GEMM_TILES for sk in (1, 4)],
        ("BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K"),
    ),
    _KEY,
    reset_to_zero=["y_ptr"],
    prune=_prune_gemm,
)
_gemv_tuned = tuned(
    _gemv_dequant_kernel,
    _configs(
        [(bn, bk, sk, w) for bn, bk, w in GEMV_TILES for sk in (1, 2, 4, 8)],
        ("BLOCK_N", "BLOCK_K", "SPLIT_K"),
    ),
    _KEY,
    reset_to_zero=["y_ptr"],
)
_lut_tuned = tuned(
    _gemv_lut_kernel,
    _configs(
        [(bn, bk, sk, w) for bn, bk, w in LUT_TILES for sk in (1, 2, 4, 8)],
        ("BLOCK_N", "BLOCK_K", "SPLIT_K"),
    ),
    _KEY,
    reset_to_zero=["y_ptr"],
)

# The interpreter's one configuration per kernel: small tiles (numpy cost grows with
# tile size) and no split.
_INTERP = {
    "gemm": {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1},
    "dequant": {"BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1},
    "lut": {"BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 1},
}
_KERNELS = {"gemm": _gemm_kernel, "dequant": _gemv_dequant_kernel, "lut": _gemv_lut_kernel}
_TUNED = {"gemm": _gemm_tuned, "dequant": _gemv_tuned, "lut": _lut_tuned}


def quant_matmul(
    x: torch.Tensor,
    w: QuantWeight,
    *,
    kernel: str = "auto",
    config: dict | None = None,
) -> torch.Tensor:
    """y = x @ W.T as float32 [M, N] for x [M, K] (fp32 or fp16, rows contiguous).

    Args:
        kernel: "auto" (GEMV_DEFAULT for M <= GEMV_MAX_M, else "gemm"), "gemm",
            "dequant" or "lut".
        config: explicit tile choice, e.g. {"BLOCK_N": 64, "BLOCK_K": 32, "SPLIT_K": 4}
            (tests, benchmarks); by default autotuned on a GPU, fixed in the interpreter.
            The LUT kernel's BLOCK_K must divide the group size.
    """
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be [M, {w.shape[1]}], got {tuple(x.shape)}")
    if x.stride(1) != 1:
        x = x.contiguous()
    M, K = x.shape
    N = w.shape[0]
    if kernel == "auto":
        kernel = GEMV_DEFAULT if M <= GEMV_MAX_M else "gemm"
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be auto, gemm, dequant or lut, got {kernel!r}")
    if kernel == "lut" and w.bits == 8:
        raise ValueError("the LUT GEMV covers ternary and INT4 weights only")
    # Split-K adds partial sums atomically; the other configurations overwrite.
    y = torch.zeros((M, N), device=x.device, dtype=torch.float32)
    if M == 0:
        return y
    m_ptr = w.m if w.m is not None else w.d  # never read without HAS_MIN
    # GS = 0 marks one scale per row (ternary: a single group spanning K).
    gs = 0 if w.bits == 2 else w.group_size
    common = dict(GS=gs, BITS=w.bits, ZERO=w.zero, HAS_MIN=w.m is not None)
    bucket = min(next_pow2(M), 256)  # autotune key: one tuning per power-of-two M
    launch = _TUNED[kernel] if config is None and not interpreting() else _KERNELS[kernel]
    if launch is _KERNELS[kernel]:
        common.update(config if config is not None else _INTERP[kernel])

    if kernel == "gemm":

        def grid(meta: dict) -> tuple[int, int, int]:
            return (
                triton.cdiv(M, meta["BLOCK_M"]),
                triton.cdiv(N, meta["BLOCK_N"]),
                meta["SPLIT_K"],
            )

        launch[grid](
            x,
            w.words,
            w.d,
            m_ptr,
            y,
            M,
            N,
            K,
            x.stride(0),
            y.stride(0),
            bucket,
            **common,
        )
        return y

    def grid_rows(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(N, meta["BLOCK_N"]), meta["SPLIT_K"], M)

    if kernel == "dequant":
        launch[grid_rows](
            x,
            w.words,
            w.d,
            m_ptr,
            y,
            M,
            N,
            K,
            x.stride(0),
            y.stride(0),
            bucket,
            **common,
        )
        return y
    if "BLOCK_K" in common and w.group_size % common["BLOCK_K"]:
        raise ValueError(f"LUT BLOCK_K must divide the group size {w.group_size}")
    nbytes = w.words.shape[0] * 4
    lut = torch.empty((M, nbytes, 256), device=x.device, dtype=torch.float32)
    block_b = 16
    _lut_build_kernel[(M, triton.cdiv(nbytes, block_b))](
        x, lut, K, nbytes, x.stride(0), BITS=w.bits, BLOCK_B=block_b
    )
    launch[grid_rows](
        x,
        lut,
        w.words,
        w.d,
        m_ptr,
        y,
        M,
        N,
        K,
        nbytes,
        x.stride(0),
        y.stride(0),
        bucket,
        **common,
    )
    return y
