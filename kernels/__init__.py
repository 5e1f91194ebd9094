"""Triton GPU kernels for lutlm, installed as ``lutlm.kernels`` (needs torch and triton:
``pip install "lutlm[gpu]"``).

- :mod:`.quant_gemm`: ternary / INT4 / INT8 weight GEMM and GEMV (dequantize-in-registers
  and lookup-table variants, split-K) over a layout packed once at load.
- :mod:`.attention`: paged KV-cache write, decode attention with split-KV and a reduce
  step, prefill / chunked-prefill attention over the paged cache; GQA.
- :mod:`.layer_ops`: RMSNorm, residual add + RMSNorm, RoPE, SiLU / relu^2 gating.

Every kernel also runs on CPU tensors under ``TRITON_INTERPRET=1`` (set before this
package is imported), which is how CI tests them.
"""

from ._runtime import interpreting
from .attention import AttentionPlan, paged_attention, write_kv
from .layer_ops import add_rms_norm, gated_act, rms_norm, rope, rope_cos_sin
from .quant_gemm import GEMV_DEFAULT, GEMV_VARIANTS, QuantWeight, pack_quant, quant_matmul

__all__ = [
    "GEMV_DEFAULT",
    "GEMV_VARIANTS",
    "AttentionPlan",
    "QuantWeight",
    "add_rms_norm",
    "gated_act",
    "interpreting",
    "pack_quant",
    "paged_attention",
    "quant_matmul",
    "rms_norm",
    "rope",
    "rope_cos_sin",
    "write_kv",
]
