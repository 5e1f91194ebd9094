"""A model's weight-holding layers as host arrays: what every backend places.

:class:`Linear` is a packed weight (a row of quant.FORMATS) with its bias and activation
precision; called, it runs its format's CPU kernel (the CPU backend uses it as is; the
GPU backend repacks its weight). :class:`Embedding` is the token table.
"""

from __future__ import annotations

import numpy as np

from lutlm.quant.formats import PackedWeight, format_of


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
        self._gemm = format_of(weight).kernel(weight, act_bits)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: float32 [T, K], C-contiguous (as every layer op returns it)."""
        y = self._gemm(x)
        return y if self.bias is None else y + self.bias

    @property
    def nbytes(self) -> int:
        return int(self.weight.nbytes)


class Embedding:
    """Token embeddings, float32 rows gathered by id (exact for every GGUF type)."""

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.shape = self.weight.shape

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.weight[ids]
