"""Ternary (1.58-bit) weights: BitNet b1.58 absmean quantization and packing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lutlm import _C
from lutlm.quant._common import activations, as_matrix, check_method


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

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes)

    def values(self) -> np.ndarray:
        """The ternary values t as int8 [N, K]."""
        return _C.unpack_ternary(self.codes, *self.shape)

    def dequantize(self) -> np.ndarray:
        return self.values().astype(np.float32) * self.scales[:, None]

    def kernel(self, method: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
        """x [M, K] float32 (C-contiguous; the binding checks) -> y [M, N], with every
        other argument bound once: the per-call path of model layers."""
        args = (self.codes, self.scales, *self.shape, check_method(method))
        gemm = _C.gemm_ternary
        return lambda x: gemm(x, *args)

    def matmul(self, x: np.ndarray, method: str = "auto") -> np.ndarray:
        """y = x @ W.T for x [M, K] (or [K]); method 'auto', 'lut' or 'mad'."""
        xm, vector = activations(x, self.shape[1])
        y = self.kernel(method)(xm)
        return y[0] if vector else y


def quantize_ternary(w: np.ndarray, per_row: bool = False) -> TernaryWeight:
    """Absmean-quantize a float matrix and pack it (see :func:`ternarize`)."""
    t, scale = ternarize(w, per_row)
    return TernaryWeight.pack(t, scale)
