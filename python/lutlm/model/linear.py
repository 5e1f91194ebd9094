"""Linear layers over packed weights, and how each checkpoint tensor becomes one.

Weight formats (`weights=` in the loader): "int4" (group 32, the default), "int8"
(group 32, GGUF Q8_0's rule), "ternary" (absmean per row) and "f32". GGUF tensors
import exactly whatever the choice when all parts of a layer are Q4_0/Q4_1 (to INT4),
all Q8_0 (to INT8) or all TQ1_0/TQ2_0 (to ternary, or INT4 where a row's blocks have
different scales: :func:`fuse_tq`); BitNet's packed checkpoints stay ternary too.
"""

from __future__ import annotations

import numpy as np

from lutlm import _C
from lutlm.quant import (
    Int4Weight,
    Int8Weight,
    TernaryWeight,
    gguf_tq_arrays,
    quantize_int4,
    quantize_int8,
    quantize_ternary,
)
from lutlm.quant.int4 import gguf_q4_arrays
from lutlm.quant.int8 import gguf_q8_arrays

WEIGHT_FORMATS = ("int4", "int8", "ternary", "f32")
# Model INT4 layers use the nibble layout: MAD over it beats the LUT kernels over bit
# planes at every batch size measured (bench/RESULTS.md, "INT4 layouts").
INT4_LAYOUT = "nibbles"

PackedWeight = Int4Weight | Int8Weight | TernaryWeight | np.ndarray


class Linear:
    """y = x @ W.T (+ bias) for a packed or float32 W [N, K]."""

    def __init__(
        self,
        weight: PackedWeight,
        bias: np.ndarray | None = None,
        act_bits: int = 8,
    ) -> None:
        self.weight = weight
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        self.out_features, self.in_features = weight.shape
        self.act_bits = act_bits  # INT4/INT8 only: 16 = two int8 passes (see Int4Weight.matmul)
        if isinstance(weight, np.ndarray):
            # lutlm's pool, not numpy's BLAS threads, which would compete with it.
            self._gemm = lambda x: _C.gemm_f32(x, weight)
        elif isinstance(weight, (Int4Weight, Int8Weight)):
            self._gemm = weight.kernel(act_bits)
        else:
            self._gemm = weight.kernel()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: float32 [T, K], C-contiguous (as every layer op returns it)."""
        y = self._gemm(x)
        return y if self.bias is None else y + self.bias

    @property
    def nbytes(self) -> int:
        return int(self.weight.nbytes)


def quantize_dense(w: np.ndarray, fmt: str) -> PackedWeight:
    """Pack a float matrix in the chosen format."""
    if fmt == "int4":
        return quantize_int4(w, 32, symmetric=True, layout=INT4_LAYOUT)
    if fmt == "int8":
        return quantize_int8(w, 32)
    if fmt == "ternary":
        return quantize_ternary(w, per_row=True)
    if fmt == "f32":
        return np.ascontiguousarray(w, dtype=np.float32)
    raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {fmt!r}")


def fuse_gguf_linear(
    parts: list[tuple[str, tuple[int, ...], np.ndarray]], dequantize: list, fmt: str
) -> PackedWeight:
    """One weight from GGUF tensors stacked along N (e.g. q, k, v).

    Args:
        parts: (ggml type, shape, raw data) per tensor.
        dequantize: callables returning each part as float32, for the other types.
        fmt: the format unless all parts are Q4_0/Q4_1 (kept as INT4), all Q8_0 (kept
            as INT8) or all TQ1_0/TQ2_0 (kept exactly, see :func:`fuse_tq`).
    """
    if all(kind in ("TQ1_0", "TQ2_0") for kind, _, _ in parts):
        return fuse_tq(parts)
    if all(kind in ("Q4_0", "Q4_1") for kind, _, _ in parts):
        qs, ds, ms = [], [], []
        for kind, shape, data in parts:
            q, d, m = gguf_q4_arrays(data, shape, kind)
            qs.append(q)
            ds.append(d)
            ms.append(-8.0 * d.astype(np.float32) if m is None else m)
        any_min = any(kind == "Q4_1" for kind, _, _ in parts)
        m_all = np.concatenate(ms).astype(np.float16) if any_min else None
        return Int4Weight.pack(np.concatenate(qs), np.concatenate(ds), m_all, 32, INT4_LAYOUT)
    if all(kind == "Q8_0" for kind, _, _ in parts):
        arrays = [gguf_q8_arrays(data, shape) for _, shape, data in parts]
        return Int8Weight.pack(
            np.concatenate([q for q, _ in arrays]), np.concatenate([d for _, d in arrays]), 32
        )
    return quantize_dense(np.concatenate([f() for f in dequantize]), fmt)


def fuse_tq(parts: list[tuple[str, tuple[int, ...], np.ndarray]]) -> TernaryWeight | Int4Weight:
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
    return Int4Weight.pack(c + 7, np.repeat(d, 2, axis=1), None, 128, INT4_LAYOUT)
