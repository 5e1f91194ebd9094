"""The table of weight formats: one row per packed format (ggml's type_traits, in Python).

Every place that handles a weight by its format asks this table, never the weight's
class: the model's Linear (the kernel), the loader (GGUF import, quantizing a float
matrix), the packed-model file (what it stores) and the GPU backend (the repack).
:func:`format_of` finds a weight's row by its type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from lutlm import _C
from lutlm.quant._common import ArraySpec, GGUFPart, GpuCodes
from lutlm.quant.int4 import MODEL_LAYOUT, Int4Weight, int4_from_gguf, quantize_int4
from lutlm.quant.int8 import Int8Weight, int8_from_gguf, quantize_int8
from lutlm.quant.ternary import TernaryWeight, quantize_ternary, ternary_from_gguf

# A packed weight of any row: f32 weights are plain float32 arrays [N, K].
PackedWeight = Int4Weight | Int8Weight | TernaryWeight | np.ndarray
# x float32 [M, K] (C-contiguous) -> y float32 [M, N].
Kernel = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class WeightFormat:
    """One packed weight format: everything the rest of lutlm needs to know about it."""

    # The format's name: the loader's `weights=` / `head=` choice, the packed manifest's
    # "kind", the GPU layout's format (lutlm.kernels.quant_gemm.FORMATS).
    name: str
    # The class of its weights (what format_of looks up).
    weight_type: type
    # (N, K, group_size) -> {array name: (dtype, shape)}, the arrays as the kernels check
    # them; a packed file's arrays are checked against it before they are used.
    arrays: Callable[[int, int, int], dict[str, ArraySpec]]
    # Arrays a weight may lack (INT4's minimums: symmetric weights have none).
    optional_arrays: frozenset[str]
    # GGUF tensor types this format imports exactly, whatever format the load asked for
    # (when every tensor of a fused layer is one of them); from_gguf does it, stacking
    # the tensors along N.
    gguf_types: tuple[str, ...]
    from_gguf: Callable[[list[GGUFPart]], PackedWeight] | None
    # A float32 matrix [N, K] in this format, as model layers use it.
    quantize: Callable[[np.ndarray], PackedWeight]
    # (weight, act_bits) -> the CPU kernel with every argument but x bound once.
    kernel: Callable[[Any, int], Kernel]
    # What the packed model file keeps: weight -> (manifest fields, arrays by name) ...
    stored: Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray]]]
    # ... and back: (arrays, (N, K), manifest fields) -> weight; ValueError if a field is bad.
    from_stored: Callable[[dict[str, np.ndarray], tuple[int, int], dict[str, Any]], Any]
    # The GPU repack's input (codes and scales, lutlm.kernels.pack_quant); None: the GPU
    # multiplies the weight as a dense fp32 matrix.
    gpu_codes: Callable[[Any], GpuCodes] | None


def _f32_kernel(w: np.ndarray, act_bits: int) -> Kernel:
    # lutlm's pool, not numpy's BLAS threads, which would compete with it.
    return lambda x: _C.gemm_f32(x, w)


def _f32_from_stored(
    arrays: dict[str, np.ndarray], shape: tuple[int, int], fields: dict[str, Any]
) -> np.ndarray:
    return arrays["w"]


FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat(
            name="int4",
            weight_type=Int4Weight,
            arrays=Int4Weight.array_specs,
            optional_arrays=frozenset({"m"}),
            gguf_types=("Q4_0", "Q4_1"),
            from_gguf=int4_from_gguf,
            quantize=partial(quantize_int4, group_size=32, symmetric=True, layout=MODEL_LAYOUT),
            kernel=Int4Weight.kernel,
            stored=Int4Weight.stored,
            from_stored=Int4Weight.from_stored,
            gpu_codes=Int4Weight.gpu_codes,
        ),
        WeightFormat(
            name="int8",
            weight_type=Int8Weight,
            arrays=Int8Weight.array_specs,
            optional_arrays=frozenset(),
            gguf_types=("Q8_0",),
            from_gguf=int8_from_gguf,
            quantize=partial(quantize_int8, group_size=32),
            kernel=Int8Weight.kernel,
            stored=Int8Weight.stored,
            from_stored=Int8Weight.from_stored,
            gpu_codes=Int8Weight.gpu_codes,
        ),
        WeightFormat(
            name="ternary",
            weight_type=TernaryWeight,
            arrays=TernaryWeight.array_specs,
            optional_arrays=frozenset(),
            # Ternary where each row has one scale, else INT4 (see ternary_from_gguf).
            gguf_types=("TQ1_0", "TQ2_0"),
            from_gguf=ternary_from_gguf,
            quantize=partial(quantize_ternary, per_row=True),
            kernel=TernaryWeight.kernel,
            stored=TernaryWeight.stored,
            from_stored=TernaryWeight.from_stored,
            gpu_codes=TernaryWeight.gpu_codes,
        ),
        WeightFormat(
            name="f32",
            weight_type=np.ndarray,
            arrays=lambda N, K, group_size: {"w": (np.float32, (N, K))},
            optional_arrays=frozenset(),
            gguf_types=(),  # F32/F16/BF16 tensors follow the load's choice of format
            from_gguf=None,
            quantize=lambda w: np.ascontiguousarray(w, dtype=np.float32),
            kernel=_f32_kernel,
            stored=lambda w: ({}, {"w": w}),
            from_stored=_f32_from_stored,
            gpu_codes=None,
        ),
    )
}
_BY_TYPE = {f.weight_type: f for f in FORMATS.values()}


def format_of(weight: object) -> WeightFormat:
    """The table row of a packed weight.

    Raises:
        TypeError: weight is of no format in FORMATS.
    """
    for t in type(weight).__mro__:  # a subclass (np.memmap) is its base's format
        if t in _BY_TYPE:
            return _BY_TYPE[t]
    raise TypeError(f"{type(weight).__name__} is not a packed weight of any format in FORMATS")


def gguf_import(kinds: list[str]) -> WeightFormat | None:
    """The row that imports tensors of all these GGUF types exactly, if one does."""
    return next((f for f in FORMATS.values() if kinds and set(kinds) <= set(f.gguf_types)), None)
