"""Quantizers and packed weight types.

Quantizing is a transform on a float weight matrix that model code never sees: it
returns a packed weight whose ``matmul`` computes ``x @ W_deq.T`` with lutlm's kernels.
"""

from lutlm.quant.int4 import Int4Weight, int4_from_gguf_blocks, quantize_int4
from lutlm.quant.int8 import Int8Weight, int8_from_gguf_blocks, quantize_int8
from lutlm.quant.ternary import (
    TernaryWeight,
    gguf_tq_arrays,
    quantize_ternary,
    ternarize,
)

__all__ = [
    "Int4Weight",
    "Int8Weight",
    "TernaryWeight",
    "gguf_tq_arrays",
    "int4_from_gguf_blocks",
    "int8_from_gguf_blocks",
    "quantize_int4",
    "quantize_int8",
    "quantize_ternary",
    "ternarize",
]
