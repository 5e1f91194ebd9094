"""Weight formats: quantizers, packed weight types and the table that describes them.

Quantizing is a transform on a float weight matrix that model code never sees: it
returns a packed weight whose ``matmul`` computes ``x @ W_deq.T`` with lutlm's kernels.

``FORMATS`` (quant/formats.py) has one row per packed format (int4 in its "planes" and
"nibbles" layouts, int8, ternary, f32): its arrays and their shapes, the GGUF types it
imports exactly, its CPU kernel behind one signature ``kernel(weight, act_bits)``, what
a packed model file stores and the GPU backend's repack. Nothing else dispatches on a
weight's format.

Adding a format (the K-quants: Q4_K, Q6_K, ...) is:

1. ``quant/<format>.py``: the packed weight class (its arrays, with the C++ layout in
   csrc/quant_types.h), ``pack``, ``array_specs``, ``kernel(act_bits, method)``,
   ``stored`` / ``from_stored``, ``gpu_codes``, the quantizer and the GGUF block import;
2. one row in ``FORMATS``;
3. its tests: tests/test_quant.py checks every row's declared shapes against its packer.
"""

from lutlm.quant.formats import FORMATS, PackedWeight, WeightFormat, format_of, gguf_import
from lutlm.quant.int4 import Int4Weight, int4_from_gguf_blocks, quantize_int4
from lutlm.quant.int8 import Int8Weight, int8_from_gguf_blocks, quantize_int8
from lutlm.quant.layers import Embedding, Linear
from lutlm.quant.ternary import TernaryWeight, gguf_tq_arrays, quantize_ternary, ternarize

__all__ = [
    "FORMATS",
    "Embedding",
    "Int4Weight",
    "Int8Weight",
    "Linear",
    "PackedWeight",
    "TernaryWeight",
    "WeightFormat",
    "format_of",
    "gguf_import",
    "gguf_tq_arrays",
    "int4_from_gguf_blocks",
    "int8_from_gguf_blocks",
    "quantize_int4",
    "quantize_int8",
    "quantize_ternary",
    "ternarize",
]
