"""Ternary (1.58-bit) weights: BitNet b1.58 absmean quantization and packing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lutlm import _C
from lutlm.quant._common import (
    STEP_BYTES,
    TERNARY_STEP_K,
    ArraySpec,
    GGUFPart,
    GpuCodes,
    activations,
    as_matrix,
    check_method,
    gguf_block_rows,
    num_tiles,
    padded_k,
)
from lutlm.quant.int4 import MODEL_LAYOUT, Int4Weight


def ternarize(w: np.ndarray, per_row: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """BitNet b1.58 absmean quantization.

    Args:
        w: float weight matrix [N, K].
        per_row: one scale per output row instead of one for the tensor.

    Returns:
        (t, scale): t int8 [N, K] in {-1, 0, 1} and scale float32 [N], with
        scale = mean(|W|) and t = clip(round(W / scale), -1, 1).
    """
    w = as_matrix(w).astype(np.float32)
    absmean = np.abs(w).mean(axis=1, keepdims=True) if per_row else np.abs(w).mean()
    scale = np.broadcast_to(np.asarray(absmean, np.float32).reshape(-1, 1), (w.shape[0], 1))
    scale = np.ascontiguousarray(scale[:, 0])
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    t = np.clip(np.rint(w / safe[:, None]), -1, 1).astype(np.int8)
    return t, scale


@dataclass(frozen=True)
class TernaryWeight:
    """A ternary matrix W[n, k] = scales[n] * t[n, k] in the LUT kernel layout."""

    codes: np.ndarray  # uint8 [ceil(N/16), Kp/8, 32], see csrc/quant_types.h
    scales: np.ndarray  # float32 [N]
    shape: tuple[int, int]

    @classmethod
    def pack(cls, t: np.ndarray, scales: np.ndarray | float) -> TernaryWeight:
        """Pack int8 ternary values [N, K] with a per-row (or scalar) scale."""
        t = np.ascontiguousarray(t, dtype=np.int8)
        n = t.shape[0] if t.ndim == 2 else 0
        scales = np.ascontiguousarray(np.broadcast_to(np.asarray(scales, np.float32), (n,)))
        codes = _C.pack_ternary(t)
        return cls(codes, scales, (int(t.shape[0]), int(t.shape[1])))

    @staticmethod
    def array_specs(N: int, K: int, group_size: int = 0) -> dict[str, ArraySpec]:
        """Dtype and shape of each packed array (csrc/bind_gemm.cpp checks them);
        group_size is not used (one scale per row)."""
        codes = (num_tiles(N), padded_k(K) // TERNARY_STEP_K, STEP_BYTES)
        return {"codes": (np.uint8, codes), "scales": (np.float32, (N,))}

    def stored(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a packed model file keeps: manifest fields and arrays by name."""
        return {}, {"codes": self.codes, "scales": self.scales}

    @classmethod
    def from_stored(
        cls, arrays: dict[str, np.ndarray], shape: tuple[int, int], fields: dict[str, Any]
    ) -> TernaryWeight:
        """The weight of :meth:`stored`'s arrays (already checked against
        :meth:`array_specs`)."""
        return cls(arrays["codes"], arrays["scales"], shape)

    def gpu_codes(self) -> GpuCodes:
        """Codes t + 1 in 0..2 [N, K] and the per-row scales: w = scale * (c - 1)."""
        codes = (self.values().astype(np.int16) + 1).astype(np.uint8)
        return GpuCodes(codes, self.scales, None, None)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes)

    def values(self) -> np.ndarray:
        """The ternary values t as int8 [N, K]."""
        return _C.unpack_ternary(self.codes, *self.shape)

    def dequantize(self) -> np.ndarray:
        return self.values().astype(np.float32) * self.scales[:, None]

    def kernel(
        self, act_bits: int = 8, method: str = "auto"
    ) -> Callable[[np.ndarray], np.ndarray]:
        """x [M, K] float32 (C-contiguous; the binding checks) -> y [M, N], with every
        other argument bound once: the per-call path of model layers (the signature every
        weight format's kernel shares, quant.formats). act_bits does not apply: ternary
        activations are int8 per row (MAD) or int8 tables (LUT)."""
        args = (self.codes, self.scales, *self.shape, check_method(method))
        gemm = _C.gemm_ternary
        return lambda x: gemm(x, *args)

    def matmul(self, x: np.ndarray, method: str = "auto") -> np.ndarray:
        """y = x @ W.T for x [M, K] (or [K]); method 'auto', 'lut' or 'mad'."""
        xm, vector = activations(x, self.shape[1])
        y = self.kernel(method=method)(xm)
        return y[0] if vector else y


def quantize_ternary(w: np.ndarray, per_row: bool = False) -> TernaryWeight:
    """Absmean-quantize a float matrix and pack it (see :func:`ternarize`)."""
    t, scale = ternarize(w, per_row)
    return TernaryWeight.pack(t, scale)


_TQ_BLOCK_BYTES = {"TQ1_0": 54, "TQ2_0": 66}  # per 256 weights, fp16 d last
_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


def _trits(x: np.ndarray, n: int) -> np.ndarray:
    """Base-3 digits of TQ1_0 bytes [..., B] as [..., n * B] (digit-major), decoded like
    ggml: the byte times 3^j keeps digit j on top (mod 256), and (v * 3) >> 8 reads it."""
    v = (x[..., None, :] * _POW3[:n, None]).astype(np.uint16)  # uint8 product wraps mod 256
    return ((v * 3) >> 8).astype(np.uint8).reshape(*x.shape[:-1], n * x.shape[-1])


def gguf_tq_arrays(
    blocks: np.ndarray, shape: tuple[int, int], ggml_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """Unpack GGUF TQ1_0 or TQ2_0 blocks to codes c uint8 [N, K] and fp16 block scales
    d [N, K/256], with w = d * (c - 1) as in gguf.quants.dequantize.

    TQ2_0 (66 bytes per 256 weights): 64 bytes of 2-bit codes, byte j of each 32-byte
    half holding weights j, j+32, j+64, j+96 of its 128 in bits 0-1, 2-3, 4-5, 6-7; then d.
    TQ1_0 (54 bytes): five base-3 digits per byte (weights j + 32i of bytes 0..31, then
    160 + j + 16i of bytes 32..47), four per byte in 4 more bytes (240 + j + 4i), then d.
    Codes are 0..2, except that TQ2_0 can hold 3 (w = 2d), which no quantizer writes.
    """
    if ggml_type not in _TQ_BLOCK_BYTES:
        raise ValueError(f"ggml_type must be TQ1_0 or TQ2_0, got {ggml_type!r}")
    N, K = shape
    bb = _TQ_BLOCK_BYTES[ggml_type]
    b = gguf_block_rows(blocks, shape, ggml_type, 256, bb)
    d = np.ascontiguousarray(b[..., bb - 2 :]).view(np.float16)[..., 0]
    if ggml_type == "TQ2_0":
        qs = b[..., :64].reshape(N, K // 256, 2, 1, 32)
        shifts = np.array([0, 2, 4, 6], np.uint8)[:, None]
        c = (qs >> shifts) & 3  # [N, blocks, half, i, j]: weight 128 half + 32 i + j
    else:
        c = np.concatenate(
            [_trits(b[..., :32], 5), _trits(b[..., 32:48], 5), _trits(b[..., 48:52], 4)], axis=-1
        )
    return np.ascontiguousarray(c.reshape(N, K)), d


def ternary_from_gguf(parts: list[GGUFPart]) -> TernaryWeight | Int4Weight:
    """GGUF TQ1_0/TQ2_0 tensors stacked along N, without loss.

    TQ stores w = d * (c - 1) with one fp16 d per 256 weights. When every row has a
    single d (BitNet conversions: one scale per tensor) and codes 0..2, this is a
    TernaryWeight with per-row scales d. Otherwise (llama.cpp's quantizer gives each
    block its own d; TQ2_0 may hold code 3, w = 2d) no per-row scale fits, so the
    weight becomes symmetric INT4 in groups of 128, d repeated per half block:
    d * (q - 8) with q = c + 7 is the same value exactly, at about twice the bytes.
    """
    arrays = [gguf_tq_arrays(data, shape, kind) for kind, shape, data in parts]
    c = np.concatenate([c for c, _ in arrays])
    d = np.concatenate([d for _, d in arrays])
    if (d == d[:, :1]).all() and c.max() <= 2:
        return TernaryWeight.pack(c.view(np.int8) - 1, d[:, 0].astype(np.float32))
    return Int4Weight.pack(c + 7, np.repeat(d, 2, axis=1), None, 128, MODEL_LAYOUT)
