"""How each checkpoint tensor becomes a packed weight (the Linear itself: quant/layers.py).

Weight formats (`weights=` in the loader) are the rows of quant.FORMATS: "int4" (group
32, the default), "int8" (group 32, GGUF Q8_0's rule), "ternary" (absmean per row) and
"f32". GGUF tensors import exactly whatever the choice when all parts of a layer are of
the GGUF types one row imports (Q4_0/Q4_1 to INT4, Q8_0 to INT8, TQ1_0/TQ2_0 to ternary
or INT4: quant.ternary.ternary_from_gguf); BitNet's packed checkpoints stay ternary too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lutlm.quant import FORMATS, PackedWeight, gguf_import
from lutlm.quant._common import GGUFPart
from lutlm.quant.layers import Linear

WEIGHT_FORMATS = tuple(FORMATS)

__all__ = [
    "WEIGHT_FORMATS",
    "Linear",
    "PackedWeight",
    "fuse_gguf_linear",
    "quantize_dense",
]


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
