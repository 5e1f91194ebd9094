"""Group-wise INT4 weights: quantization, GGUF Q4_0/Q4_1 import and packing.

w = d * q + m for codes q in 0..15 with one fp16 scale d (and minimum m) per group of
32, 64 or 128 weights along K. Symmetric weights store no minimum: m = -8 d, which is
GGUF Q4_0's (q - 8) * d exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lutlm import _C
from lutlm.quant._common import (
    INT4_STEP_K,
    STEP_BYTES,
    TILE_ROWS,
    ArraySpec,
    GGUFPart,
    GpuCodes,
    activations,
    as_matrix,
    check_group_size,
    check_method,
    gguf_block_rows,
    num_groups,
    num_tiles,
    pack_group_scales,
    padded_groups,
    padded_k,
    unpack_group_scales,
)

_GGUF_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}


# "planes": bit planes for the LUT kernels (and MAD, through a table decode).
# "nibbles": decoded for the MAD kernels by a mask and a shift; no LUT form.
LAYOUTS = ("planes", "nibbles")
# Model INT4 layers use the nibble layout: MAD over it beats the LUT kernels over bit
# planes at every batch size measured (bench/RESULTS.md, "INT4 layouts").
MODEL_LAYOUT = "nibbles"


def _pack_nibbles(q: np.ndarray, group_size: int) -> np.ndarray:
    """Codes q [N, K] in the nibble layout (csrc/quant_types.h), [ceil(N/16), Kp/4, 32]."""
    N, K = q.shape
    if q.size and int(q.max()) > 15:
        raise ValueError(f"q must hold INT4 codes 0..15, got {int(q.max())}")
    NT, Kp = num_tiles(N), padded_k(K, group_size)
    p = np.zeros((NT * TILE_ROWS, Kp), np.uint8)
    p[:N, :K] = q
    p = p.reshape(NT, TILE_ROWS, Kp // 8, 2, 4)  # [tile, row, octet, half, i]
    octets = (p[:, :, :, 0, :] | (p[:, :, :, 1, :] << 4)).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(octets).reshape(NT, Kp // INT4_STEP_K, STEP_BYTES)


@dataclass(frozen=True)
class Int4Weight:
    """An INT4 matrix in a kernel layout: "nibbles" (MAD) or "planes" (LUT)."""

    codes: np.ndarray  # uint8 [ceil(N/16), Kp/4, 32], see csrc/quant_types.h
    d: np.ndarray  # uint16 (fp16 bits) [ceil(N/16), G, 16]
    m: np.ndarray | None  # same as d, or None when symmetric
    shape: tuple[int, int]
    group_size: int
    layout: str = "planes"

    @classmethod
    def pack(
        cls,
        q: np.ndarray,
        d: np.ndarray,
        m: np.ndarray | None,
        group_size: int,
        layout: str = "planes",
    ) -> Int4Weight:
        """Pack codes q uint8 [N, K] and fp16 scales d, minimums m [N, G]."""
        check_group_size(group_size)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        q = np.ascontiguousarray(q, dtype=np.uint8)
        if q.ndim != 2:
            raise ValueError(f"q must be 2-D [N, K], got shape {q.shape}")
        N, K = q.shape
        codes = _C.pack_int4(q, group_size) if layout == "planes" else _pack_nibbles(q, group_size)
        return cls(
            codes,
            pack_group_scales(d, N, K, group_size, "d"),
            None if m is None else pack_group_scales(m, N, K, group_size, "m"),
            (int(N), int(K)),
            group_size,
            layout,
        )

    @staticmethod
    def array_specs(N: int, K: int, group_size: int) -> dict[str, ArraySpec]:
        """Dtype and shape of each packed array (csrc/bind_gemm.cpp checks them); "m"
        is absent from symmetric weights."""
        NT, Kp = num_tiles(N), padded_k(K, group_size)
        scales = (np.uint16, (NT, Kp // group_size, TILE_ROWS))
        return {"codes": (np.uint8, (NT, Kp // INT4_STEP_K, STEP_BYTES)), "d": scales, "m": scales}

    def stored(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a packed model file keeps: manifest fields and arrays by name."""
        arrays = {"codes": self.codes, "d": self.d}
        if self.m is not None:
            arrays["m"] = self.m
        return {"group_size": self.group_size, "layout": self.layout}, arrays

    @classmethod
    def from_stored(
        cls, arrays: dict[str, np.ndarray], shape: tuple[int, int], fields: dict[str, Any]
    ) -> Int4Weight:
        """The weight of :meth:`stored`'s fields and arrays (already checked against
        :meth:`array_specs`)."""
        layout = fields["layout"]
        if layout not in LAYOUTS:
            raise ValueError(f"has layout {layout!r}, expected {LAYOUTS}")
        m = arrays.get("m")
        return cls(arrays["codes"], arrays["d"], m, shape, fields["group_size"], layout)

    def gpu_codes(self) -> GpuCodes:
        """Codes 0..15 [N, K] and scales and minimums [N, G]: w = d * c + m, or d * (c - 8)."""
        N, K = self.shape
        codes = _C.unpack_int4(self.codes, N, K, self.group_size, self.layout)
        m = None if self.m is None else unpack_group_scales(self.m, N)
        return GpuCodes(codes, unpack_group_scales(self.d, N), m, self.group_size)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.d.nbytes + (0 if self.m is None else self.m.nbytes))

    def _unpack_scales(self, s: np.ndarray) -> np.ndarray:
        return unpack_group_scales(s, self.shape[0])

    def dequantize(self) -> np.ndarray:
        N, K = self.shape
        q = _C.unpack_int4(self.codes, N, K, self.group_size, self.layout).astype(np.float32)
        d = np.repeat(self._unpack_scales(self.d), self.group_size, axis=1)[:, :K]
        m = (
            -8.0 * d
            if self.m is None
            else np.repeat(self._unpack_scales(self.m), self.group_size, axis=1)[:, :K]
        )
        return (d * q + m).astype(np.float32)

    def kernel(self, act_bits: int = 8, method: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
        """x [M, K] float32 (C-contiguous; the binding checks) -> y [M, N], with every
        other argument bound once: the per-call path of model layers (the signature every
        weight format's kernel shares, quant.formats)."""
        args = (self.codes, self.d, self.m, *self.shape, self.group_size)
        tail = (check_method(method), act_bits, self.layout)
        gemm = _C.gemm_int4
        return lambda x: gemm(x, *args, *tail)

    def matmul(self, x: np.ndarray, method: str = "auto", act_bits: int = 8) -> np.ndarray:
        """y = x @ W.T for x [M, K] (or [K]).

        Args:
            x: activations [M, K] or [K].
            method: 'auto', 'lut' (planes layout only) or 'mad'.
            act_bits: 8, or 16 for two int8 passes (MAD only): activation error about
                1/254 of int8's, at about twice the MAD cost.
        """
        xm, vector = activations(x, self.shape[1])
        y = self.kernel(act_bits, method)(xm)
        return y[0] if vector else y


def quantize_int4(
    w: np.ndarray, group_size: int = 32, symmetric: bool = True, layout: str = "planes"
) -> Int4Weight:
    """Group-wise INT4 quantization with fp16 scales.

    Symmetric (GGUF Q4_0 style): d = v / -8 where v is the group's value of largest
    magnitude, q = clip(round(w / d) + 8, 0, 15). Asymmetric (Q4_1 style):
    d = (max - min) / 15, m = min, q = clip(round((w - m) / d), 0, 15). Scales are
    rounded to fp16 before q is computed, so q is chosen for the stored scale.
    """
    check_group_size(group_size)
    w = as_matrix(w).astype(np.float32)
    N, K = w.shape
    G = num_groups(K, group_size)
    g = padded_groups(w, group_size)
    mask = np.zeros((N, G * group_size), bool)
    mask[:, :K] = True
    valid = mask.reshape(N, G, group_size)
    if symmetric:
        idx = np.argmax(np.where(valid, np.abs(g), -1.0), axis=2)
        vmax = np.take_along_axis(g, idx[..., None], axis=2)[..., 0]
        d = (vmax / -8.0).astype(np.float16)
        d32 = d.astype(np.float32)
        inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 != 0)
        q = np.clip(np.rint(g * inv[..., None]) + 8, 0, 15)
        m = None
    else:
        lo = np.min(np.where(valid, g, np.inf), axis=2)
        hi = np.max(np.where(valid, g, -np.inf), axis=2)
        d = ((hi - lo) / 15.0).astype(np.float16)
        m = lo.astype(np.float16)
        d32, m32 = d.astype(np.float32), m.astype(np.float32)
        inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 != 0)
        q = np.clip(np.rint((g - m32[..., None]) * inv[..., None]), 0, 15)
    q = q.reshape(N, -1)[:, :K].astype(np.uint8)
    return Int4Weight.pack(q, d, m, group_size, layout)


def gguf_q4_arrays(
    blocks: np.ndarray, shape: tuple[int, int], ggml_type: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Unpack GGUF Q4_0/Q4_1 blocks to codes q [N, K] and fp16 scales d, minimums m
    [N, K/32] (m is None for Q4_0). Arguments as for :func:`int4_from_gguf_blocks`."""
    if ggml_type not in _GGUF_BLOCK_BYTES:
        raise ValueError(f"ggml_type must be Q4_0 or Q4_1, got {ggml_type!r}")
    N, K = shape
    bb = _GGUF_BLOCK_BYTES[ggml_type]
    b = gguf_block_rows(blocks, shape, ggml_type, 32, bb)
    d = np.ascontiguousarray(b[..., 0:2]).view(np.float16)[..., 0]
    m = None
    if ggml_type == "Q4_1":
        m = np.ascontiguousarray(b[..., 2:4]).view(np.float16)[..., 0]
    qs = b[..., bb - 16 :]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(N, K)
    return q, d, m


def int4_from_gguf_blocks(
    blocks: np.ndarray, shape: tuple[int, int], ggml_type: str, layout: str = "planes"
) -> Int4Weight:
    """Import GGUF Q4_0 or Q4_1 blocks without loss.

    Args:
        blocks: the tensor's raw bytes as uint8, [N, K/32 * block_bytes] or flat.
        shape: (N, K) in GGUF's row-major order (K is the contiguous dimension).
        ggml_type: "Q4_0" (d, 16 bytes of codes) or "Q4_1" (d, m, 16 bytes of codes).

    Returns:
        An Int4Weight whose dequantized values equal GGUF's bit for bit.
    """
    q, d, m = gguf_q4_arrays(blocks, shape, ggml_type)
    return Int4Weight.pack(q, d, m, 32, layout)


def int4_from_gguf(parts: list[GGUFPart]) -> Int4Weight:
    """GGUF Q4_0/Q4_1 tensors stacked along N (e.g. q, k, v), without loss, in the model
    layout. A Q4_0 part among Q4_1 ones gets its minimum written out: m = -8 d."""
    qs, ds, ms = [], [], []
    for kind, shape, data in parts:
        q, d, m = gguf_q4_arrays(data, shape, kind)
        qs.append(q)
        ds.append(d)
        ms.append(-8.0 * d.astype(np.float32) if m is None else m)
    any_min = any(kind == "Q4_1" for kind, _, _ in parts)
    m_all = np.concatenate(ms).astype(np.float16) if any_min else None
    return Int4Weight.pack(np.concatenate(qs), np.concatenate(ds), m_all, 32, MODEL_LAYOUT)
