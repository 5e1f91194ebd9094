"""Linear layers over packed weights, and how each checkpoint tensor becomes one.

Weight formats (`weights=` in the loader) are the rows of quant.FORMATS: "int4" (group
32, the default), "int8" (group 32, GGUF Q8_0's rule), "ternary" (absmean per row) and
"f32". GGUF tensors import exactly whatever the choice when all parts of a layer are of
the GGUF types one row imports (Q4_0/Q4_1 to INT4, Q8_0 to INT8, TQ1_0/TQ2_0 to ternary
or INT4: quant.ternary.ternary_from_gguf); BitNet's packed checkpoints stay ternary too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lutlm.quant import FORMATS, PackedWeight, format_of, gguf_import
from lutlm.quant._common import GGUFPart

WEIGHT_FORMATS = tuple(FORMATS)

__all__ = [
    "WEIGHT_FORMATS",
    "Linear",
    "PackedWeight",
    "fuse_gguf_linear",
    "quantize_dense",
]


class Linear:
    """y = x @ W.T (+ bias) for a packed or float32 W [N, K], on the CPU kernels (the GPU
    backend repacks it: backends/gpu.py)."""

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


def quantize_dense(w: np.ndarray, fmt: str) -> PackedWeight:
    """Pack a float matrix in the chosen format (a row of quant.FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {fmt!r}")
    return FORMATS[fmt].quantize(w)


def fuse_gguf_linear(
    parts: list[GGUFPart], dequantize: list[Callable[[], np.ndarray]], fmt: str
) -> PackedWeight:
    """One weight from GGUF tensors stacked along N (e.g. q, k, v).

    Args:
        parts: (ggml type, shape, raw data) per tensor.
        dequantize: callables returning each part as float32, for the other types.
        fmt: the format, unless one row of quant.FORMATS imports every part's type
            exactly (then that row's from_gguf does).
    """
    exact = gguf_import([kind for kind, _, _ in parts])
    if exact is not None and exact.from_gguf is not None:
        return exact.from_gguf(parts)
    return quantize_dense(np.concatenate([f() for f in dequantize]), fmt)
