"""The GPU backend: the ops over torch and lutlm.kernels (Triton), the KV cache on the
device.

A model's linears are repacked once at placement from their quant.FORMATS row's
``gpu_codes`` (the integer codes and scales of the CPU-packed weight, so the values are
exactly the CPU model's) into lutlm.kernels' layout; norms and the fp32 embedding are
copied to the device. Per step the batch's numpy metadata is copied to the device once and
an AttentionPlan is built on the host for all layers; only the wanted logits rows come
back. The residual stream stays fp32 on the device; GEMM inputs are rounded to fp16
inside the kernels (see quant_gemm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

import lutlm.kernels as gpu_kernels
from lutlm.backends.base import Backend, PagedKVCache
from lutlm.backends.batch import ForwardBatch
from lutlm.kernels import AttentionPlan, QuantWeight, pack_quant, quant_matmul, rope_cos_sin
from lutlm.kernels.quant_gemm import GEMV_MAX_M, GEMV_VARIANTS
from lutlm.model_config import ModelConfig
from lutlm.quant import format_of
from lutlm.quant.layers import Embedding, Linear


def to_device(a: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A float32 copy of a host array on the device. Always a copy: the CPU model's arrays
    may be read-only memory maps, and on device "cpu" a view would alias them."""
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C")).to(device)


def repack(weight: object, device: torch.device | str) -> QuantWeight | torch.Tensor:
    """A packed weight (a quant.FORMATS row's) in its GPU form, values unchanged: the
    row's gpu_codes packed by lutlm.kernels.pack_quant, or a dense fp32 matrix."""
    row = format_of(weight)
    if row.gpu_codes is None:
        return to_device(weight, device)  # f32
    codes, d, m, group_size = row.gpu_codes(weight)
    return pack_quant(codes, d, m, group_size, row.name, device)


class GpuKVCache(PagedKVCache):
    """The paged KV cache as fp16 torch tensors on the device."""

    def __init__(
        self, config: ModelConfig, num_blocks: int, block_size: int, device: torch.device
    ) -> None:
        self.device = device
        super().__init__(config, num_blocks, block_size)

    def _zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float16, device=self.device)


class GpuLinear:
    """A model Linear on the device: low-bit weights in the GPU layout (quant_gemm), f32
    weights as a dense fp32 matrix for torch.matmul."""

    def __init__(self, linear: Linear, device: torch.device, gemv: str = "auto") -> None:
        self.out_features, self.in_features = linear.out_features, linear.in_features
        self.bias = None if linear.bias is None else to_device(linear.bias, device)
        self.weight = repack(linear.weight, device)
        w = self.weight
        if isinstance(w, torch.Tensor):
            self._matmul: Callable[[torch.Tensor], torch.Tensor] = lambda x: x @ w.T
            return
        if w.bits == 8 and gemv == "lut":
            gemv = "dequant"  # no LUT form for INT8 (a byte is one code: nothing to share)

        def matmul(x: torch.Tensor) -> torch.Tensor:
            return quant_matmul(x, w, kernel=gemv if x.shape[0] <= GEMV_MAX_M else "auto")

        self._matmul = matmul

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x)
        return y if self.bias is None else y + self.bias


@dataclass
class GpuRope:
    inv_freq: np.ndarray  # float32 [hd / 2]
    interleaved: bool
    cos_sin: torch.Tensor  # fp32 [positions, 2, hd / 2] (lutlm.kernels.rope_cos_sin)


@dataclass(frozen=True, slots=True)
class GpuStep:
    """One step's batch metadata on the device."""

    cache: GpuKVCache
    token_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    slots: torch.Tensor  # int32 [T]
    block_tables: torch.Tensor  # int32 [S, max_blocks]
    context_lens: torch.Tensor  # int32 [S]
    cu_seqlens_q: torch.Tensor  # int32 [S + 1]
    logits_indices: torch.Tensor  # int64 [L]
    max_position: int  # -1 for no tokens
    plan: AttentionPlan


class GpuBackend(Backend):
    """The ops on a GPU (or, for tests, on CPU tensors under TRITON_INTERPRET=1).

    Args:
        device: "cuda", "cuda:N", or "cpu" (Triton interpreter only).
        gemv: GEMV kernel for decode-sized batches: "auto" (quant_gemm.GEMV_DEFAULT),
            "dequant" or "lut" (for benchmarks).
    """

    cache_type = GpuKVCache
    kernels = gpu_kernels

    def __init__(self, device: str = "cuda", gemv: str = "auto") -> None:
        if device == "cpu" and not gpu_kernels.interpreting():
            raise RuntimeError(
                "the GPU backend on device 'cpu' runs the Triton kernels in the interpreter: "
                "set TRITON_INTERPRET=1 before lutlm.kernels is imported (tests only; slow)"
            )
        if gemv not in ("auto", *GEMV_VARIANTS):
            raise ValueError(f"gemv must be 'auto' or one of {GEMV_VARIANTS}, got {gemv!r}")
        self.device = torch.device(device)
        self.gemv = gemv

    def linear_weight(self, linear: Linear) -> GpuLinear:
        return GpuLinear(linear, self.device, self.gemv)

    def vector(self, a: np.ndarray) -> torch.Tensor:
        return to_device(a, self.device)

    def embedding(self, table: Embedding) -> torch.Tensor:
        return to_device(table.weight, self.device)

    def rope(self, inv_freq: np.ndarray, interleaved: bool, max_positions: int) -> GpuRope:
        inv = np.asarray(inv_freq, np.float32)
        return GpuRope(inv, interleaved, rope_cos_sin(inv, max_positions, self.device))

    def new_cache(self, config: ModelConfig, num_blocks: int, block_size: int) -> GpuKVCache:
        return GpuKVCache(config, num_blocks, block_size, self.device)

    def _tensor(self, a: np.ndarray, dtype: type[np.generic]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype)).to(self.device)

    @contextmanager
    def step(self, batch: ForwardBatch, cache: GpuKVCache) -> Iterator[GpuStep]:
        self.check_cache(cache)
        # Triton launches on torch's current device: make it this backend's (cuda:N).
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with on_device, torch.inference_mode():
            t = self._tensor
            yield GpuStep(
                cache=cache,
                token_ids=t(batch.token_ids, np.int64),
                positions=t(batch.positions, np.int64),
                slots=t(batch.slot_mapping, np.int32),
                block_tables=t(batch.block_tables, np.int32),
                context_lens=t(batch.context_lens, np.int32),
                cu_seqlens_q=t(batch.cu_seqlens_q, np.int32),
                logits_indices=t(batch.logits_indices, np.int64),
                max_position=int(batch.positions.max()) if len(batch.positions) else -1,
                plan=AttentionPlan.build(batch.cu_seqlens_q, batch.context_lens, self.device),
            )

    def embed(self, table: torch.Tensor, step: GpuStep) -> torch.Tensor:
        return table[step.token_ids]  # a copy

    def qkv_rope_cache(
        self, qkv: torch.Tensor, rope: GpuRope, step: GpuStep, layer: int, num_heads: int
    ) -> torch.Tensor:
        k_cache, v_cache = step.cache.k[layer], step.cache.v[layer]
        kv_heads, head_dim = k_cache.shape[2:]
        if step.max_position >= rope.cos_sin.shape[0]:
            # Positions past the config's context (the engine's max_model_len allows it).
            n = 2 * step.max_position + 1
            rope.cos_sin = rope_cos_sin(rope.inv_freq, n, self.device)
        heads = num_heads + kv_heads  # q and k heads lead the qkv rows: one call rotates both
        gpu_kernels.rope(qkv, step.positions, rope.cos_sin, heads, head_dim, rope.interleaved)
        gpu_kernels.write_kv(qkv, step.slots, k_cache, v_cache, num_heads)
        return qkv

    def paged_attention(
        self, q: torch.Tensor, step: GpuStep, layer: int, num_heads: int, scale: float
    ) -> torch.Tensor:
        return gpu_kernels.paged_attention(
            q,
            step.cache.k[layer],
            step.cache.v[layer],
            step.block_tables,
            step.context_lens,
            step.cu_seqlens_q,
            scale,
            num_heads,
            step.plan,
        )

    def logits_rows(self, h: torch.Tensor, step: GpuStep) -> torch.Tensor:
        return h[step.logits_indices]

    def lm_head(self, x: torch.Tensor, w: GpuLinear) -> np.ndarray:
        return w(x).cpu().numpy()
