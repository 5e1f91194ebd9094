"""Fused elementwise layer ops: RMSNorm, residual add + RMSNorm, RoPE, gated activations.

Each is one pass over its rows: the fusions remove the separate residual add (one read and
write of the residual stream per layer and norm) and the gate/up split (the activation
reads the stacked [gate | up] GEMM output directly). All take and return fp32 tensors
with contiguous rows, like the CPU ops in lutlm._C they mirror.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ._runtime import next_pow2


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    r_ptr,
    w_ptr,
    y_ptr,
    D,
    eps,
    stride_x,
    stride_r,
    stride_y,
    ADD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < D
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    if ADD:  # x is the residual stream h: h += delta, in place, then normalize h
        x += tl.load(r_ptr + row * stride_r + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(x_ptr + row * stride_x + offs, x, mask=mask)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + offs, x * inv * w, mask=mask)


def _rows(x: torch.Tensor, name: str) -> None:
    if x.ndim != 2 or x.stride(1) != 1:
        raise ValueError(f"{name} must be 2-D with contiguous rows, got {tuple(x.shape)}")


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of each row of x [T, D] times w [D], as a new fp32 tensor."""
    _rows(x, "x")
    T, D = x.shape
    y = torch.empty((T, D), device=x.device, dtype=torch.float32)
    if T:
        _rms_norm_kernel[(T,)](
            x, x, w, y, D, eps, x.stride(0), x.stride(0), y.stride(0), ADD=False, BLOCK=next_pow2(D)
        )
    return y


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """h += delta in place (fp32 residual stream); returns RMSNorm(h) * w."""
    _rows(h, "h")
    _rows(delta, "delta")
    if h.dtype != torch.float32 or delta.shape != h.shape:
        raise ValueError("h must be fp32 and delta the same shape")
    T, D = h.shape
    y = torch.empty((T, D), device=h.device, dtype=torch.float32)
    if T:
        _rms_norm_kernel[(T,)](
            h,
            delta,
            w,
            y,
            D,
            eps,
            h.stride(0),
            delta.stride(0),
            y.stride(0),
            ADD=True,
            BLOCK=next_pow2(D),
        )
    return y


@triton.jit
def _gated_act_kernel(
    gu_ptr, y_ptr, F, stride_gu, stride_y, RELU2: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < F
    g = tl.load(gu_ptr + row * stride_gu + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * stride_gu + F + offs, mask=mask, other=0.0).to(tl.float32)
    if RELU2:  # BitNet b1.58: relu(g)^2
        r = tl.maximum(g, 0.0)
        a = r * r
    else:  # SiLU; exp(-g) overflows to inf for g < -88, giving g / inf = -0, as wanted
        a = g / (1.0 + tl.exp(-g))
    tl.store(y_ptr + row * stride_y + offs, a * u, mask=mask)


def gated_act(gu: torch.Tensor, relu2: bool = False) -> torch.Tensor:
    """act(gate) * up for gu = [gate | up] [T, 2F]; act = SiLU, or relu^2 (BitNet)."""
    _rows(gu, "gu")
    T, F2 = gu.shape
    if F2 % 2:
        raise ValueError(f"gu must be [T, 2F], got {tuple(gu.shape)}")
    F = F2 // 2
    y = torch.empty((T, F), device=gu.device, dtype=torch.float32)
    block = min(1024, next_pow2(F))
    if T:
        _gated_act_kernel[(T, triton.cdiv(F, block))](
            gu, y, F, gu.stride(0), y.stride(0), RELU2=relu2, BLOCK=block
        )
    return y


def rope_cos_sin(
    inv_freq: np.ndarray, num_positions: int, device: str | torch.device
) -> torch.Tensor:
    """cos and sin of position * inv_freq for positions 0..num_positions-1, as fp32
    [num_positions, 2, head_dim / 2]. The angles are formed in float64 on the host, as the
    CPU kernel does, so large positions lose no accuracy to an fp32 product."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    ang = pos * np.asarray(inv_freq, np.float32).astype(np.float64)[None, :]
    table = np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)
    return torch.from_numpy(table).to(device)


@triton.jit
def _rope_kernel(
    x_ptr, pos_ptr, cs_ptr, stride_t, HALF, INTERLEAVED: tl.constexpr, BLOCK: tl.constexpr
):
    t = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    i = tl.arange(0, BLOCK)
    mask = i < HALF
    p = tl.load(pos_ptr + t)
    c = tl.load(cs_ptr + p * 2 * HALF + i, mask=mask, other=1.0)
    s = tl.load(cs_ptr + p * 2 * HALF + HALF + i, mask=mask, other=0.0)
    base = x_ptr + t * stride_t + head * 2 * HALF
    if INTERLEAVED:  # pairs (x[2i], x[2i+1]): GGUF llama-family weights
        ia = 2 * i
        ib = 2 * i + 1
    else:  # halves (x[i], x[i + d/2]): HF checkpoints
        ia = i
        ib = i + HALF
    a = tl.load(base + ia, mask=mask, other=0.0)
    b = tl.load(base + ib, mask=mask, other=0.0)
    tl.store(base + ia, a * c - b * s, mask=mask)
    tl.store(base + ib, b * c + a * s, mask=mask)


def rope(
    x: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    num_heads: int,
    head_dim: int,
    interleaved: bool,
) -> None:
    """Rotate the first num_heads heads of each row of x [T, >= num_heads * head_dim] in
    place (q and k heads lead the fused qkv rows, so one call covers both).

    Args:
        positions: int64 [T] on x's device, each below cos_sin.shape[0].
        cos_sin: the table of :func:`rope_cos_sin`.
    """
    _rows(x, "x")
    if head_dim % 2 or x.shape[1] < num_heads * head_dim or x.dtype != torch.float32:
        raise ValueError("x must be fp32 [T, >= num_heads * head_dim] with an even head_dim")
    T = x.shape[0]
    half = head_dim // 2
    if T and num_heads:
        _rope_kernel[(T, num_heads)](
            x, positions, cos_sin, x.stride(0), half, INTERLEAVED=interleaved, BLOCK=next_pow2(half)
        )


__all__ = ["add_rms_norm", "gated_act", "rms_norm", "rope", "rope_cos_sin"]
