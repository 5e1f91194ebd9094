"""Group-wise INT8 weights (GGUF Q8_0): quantization, GGUF import and packing.

w = d * q for q in -128..127 (the quantizer produces -127..127) with one fp16 scale d
per group of 32, 64 or 128 weights along K. GGUF Q8_0 is group 32: a 34-byte block
holds d, then 32 int8 values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lutlm import _C
from lutlm.quant._common import (
    TILE_ROWS,
    ArraySpec,
    GGUFPart,
    GpuCodes,
    activations,
    as_matrix,
    check_group_size,
    check_method,
    gguf_block_rows,
    num_tiles,
    pack_group_scales,
    padded_groups,
    padded_k,
    unpack_group_scales,
)

_Q8_0_BLOCK_BYTES = 34


@dataclass(frozen=True)
class Int8Weight:
    """An INT8 matrix stored directly in the MAD kernels' quad layout, fp16 group scales."""

    codes: np.ndarray  # int8 [ceil(N/16), Kp/4, 16, 4]: 4 consecutive k of a tile's 16 rows
    d: np.ndarray  # uint16 (fp16 bits) [ceil(N/16), G, 16]
    shape: tuple[int, int]
    group_size: int

    @classmethod
    def pack(cls, q: np.ndarray, d: np.ndarray, group_size: int) -> Int8Weight:
        """Pack codes q int8 [N, K] and fp16 scales d [N, G]."""
        check_group_size(group_size)
        q = np.asarray(q)
        if q.ndim != 2 or q.shape[0] == 0 or q.shape[1] == 0:
            raise ValueError(f"q must be a non-empty 2-D matrix [N, K], got shape {q.shape}")
        if not np.issubdtype(q.dtype, np.integer):
            raise ValueError(f"q must be integer, got dtype {q.dtype}")
        if q.dtype != np.int8 and (q.min() < -128 or q.max() > 127):
            raise ValueError("INT8 codes must be in -128..127")
        N, K = q.shape
        NT, Kp = num_tiles(N), padded_k(K, group_size)
        padded = np.zeros((NT * TILE_ROWS, Kp), np.int8)
        padded[:N, :K] = q
        codes = padded.reshape(NT, TILE_ROWS, Kp // 4, 4).transpose(0, 2, 1, 3)
        return cls(
            np.ascontiguousarray(codes),
            pack_group_scales(d, N, K, group_size, "d"),
            (int(N), int(K)),
            group_size,
        )

    @staticmethod
    def array_specs(N: int, K: int, group_size: int) -> dict[str, ArraySpec]:
        """Dtype and shape of each packed array (csrc/bind_gemm.cpp checks them)."""
        NT, Kp = num_tiles(N), padded_k(K, group_size)
        return {
            "codes": (np.int8, (NT, Kp // 4, TILE_ROWS, 4)),
            "d": (np.uint16, (NT, Kp // group_size, TILE_ROWS)),
        }

    def stored(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a packed model file keeps: manifest fields and arrays by name."""
        return {"group_size": self.group_size}, {"codes": self.codes, "d": self.d}

    @classmethod
    def from_stored(
        cls, arrays: dict[str, np.ndarray], shape: tuple[int, int], fields: dict[str, Any]
    ) -> Int8Weight:
        """The weight of :meth:`stored`'s fields and arrays (already checked against
        :meth:`array_specs`)."""
        return cls(arrays["codes"], arrays["d"], shape, fields["group_size"])

    def gpu_codes(self) -> GpuCodes:
        """Codes q + 128 [N, K] and scales [N, G]: w = d * (c - 128)."""
        codes = (self.values().astype(np.int16) + 128).astype(np.uint8)
        return GpuCodes(codes, unpack_group_scales(self.d, self.shape[0]), None, self.group_size)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.d.nbytes)

    def values(self) -> np.ndarray:
        """The codes q as int8 [N, K]."""
        N, K = self.shape
        NT, quads = self.codes.shape[:2]
        return self.codes.transpose(0, 2, 1, 3).reshape(NT * TILE_ROWS, quads * 4)[:N, :K]

    def dequantize(self) -> np.ndarray:
        K = self.shape[1]
        d = np.repeat(unpack_group_scales(self.d, self.shape[0]), self.group_size, axis=1)
        return self.values().astype(np.float32) * d[:, :K]

    def kernel(
        self, act_bits: int = 8, method: str = "auto"
    ) -> Callable[[np.ndarray], np.ndarray]:
        """x [M, K] float32 (C-contiguous; the binding checks) -> y [M, N], with every
        other argument bound once: the per-call path of model layers (the signature every
        weight format's kernel shares, quant.formats). INT8 has only the MAD kernels: a
        table per four activations cannot beat one multiply-add per 8-bit weight."""
        if check_method(method) == "lut":
            raise ValueError("INT8 weights have no LUT kernel; method must be 'auto' or 'mad'")
        args = (self.codes, self.d, *self.shape, self.group_size, act_bits)
        gemm = _C.gemm_int8
        return lambda x: gemm(x, *args)

    def matmul(self, x: np.ndarray, act_bits: int = 8) -> np.ndarray:
        """y = x @ W.T for x [M, K] (or [K]), with the int8 dot-product kernels.

        Args:
            x: activations [M, K] or [K].
            act_bits: 8 (int8 per weight group), or 16 for two int8 passes: activation
                error about 1/254 of int8's.
        """
        xm, vector = activations(x, self.shape[1])
        y = self.kernel(act_bits)(xm)
        return y[0] if vector else y


def quantize_int8(w: np.ndarray, group_size: int = 32) -> Int8Weight:
    """Group-wise INT8 quantization, GGUF Q8_0's rule: d = fp16(max|w_group| / 127),
    q = clip(round(w / d), -127, 127), with q chosen for the fp16-rounded d."""
    check_group_size(group_size)
    w = as_matrix(w).astype(np.float32)
    N, K = w.shape
    g = padded_groups(w, group_size)
    with np.errstate(over="ignore"):
        d = (np.maximum(g.max(axis=2), -g.min(axis=2)) / 127).astype(np.float16)
    if np.isinf(d).any():
        raise ValueError("w has values beyond the fp16 scale range (|w| > 65504 * 127)")
    d32 = d.astype(np.float32)[..., None]
    # In place: a vocabulary-sized head is tens of MB per temporary.
    q = np.divide(g, d32, out=np.zeros_like(g), where=d32 != 0)
    np.rint(q, out=q)
    np.clip(q, -127, 127, out=q)
    return Int8Weight.pack(q.astype(np.int8).reshape(N, -1)[:, :K], d, group_size)


def gguf_q8_arrays(blocks: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Unpack GGUF Q8_0 blocks to codes q int8 [N, K] and fp16 scales d [N, K/32].
    Arguments as for :func:`int8_from_gguf_blocks`."""
    N, K = shape
    b = gguf_block_rows(blocks, shape, "Q8_0", 32, _Q8_0_BLOCK_BYTES)
    d = np.ascontiguousarray(b[..., :2]).view(np.float16)[..., 0]
    q = np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(N, K)
    return q, d


def int8_from_gguf_blocks(blocks: np.ndarray, shape: tuple[int, int]) -> Int8Weight:
    """Import GGUF Q8_0 blocks without loss.

    Args:
        blocks: the tensor's raw bytes as uint8, [N, K/32 * 34] or flat.
        shape: (N, K) in GGUF's row-major order (K is the contiguous dimension).

    Returns:
        An Int8Weight whose dequantized values equal GGUF's bit for bit.
    """
    q, d = gguf_q8_arrays(blocks, shape)
    return Int8Weight.pack(q, d, 32)


def int8_from_gguf(parts: list[GGUFPart]) -> Int8Weight:
    """GGUF Q8_0 tensors stacked along N (e.g. q, k, v), without loss."""
    arrays = [gguf_q8_arrays(data, shape) for _, shape, data in parts]
    return Int8Weight.pack(
        np.concatenate([q for q, _ in arrays]), np.concatenate([d for _, d in arrays]), 32
    )
