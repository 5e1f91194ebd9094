"""The CPU backend: the ops over lutlm._C, the KV cache in numpy arrays.

A model's parameters stay as loaded (placement is the identity): the arrays may be
read-only maps of a packed file, which the kernels only read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from lutlm import _C
from lutlm.backends.base import Backend, PagedKVCache
from lutlm.backends.batch import ForwardBatch
from lutlm.quant.layers import Embedding, Linear


class KVCache(PagedKVCache):
    """The paged KV cache in numpy fp16 arrays."""

    def _zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, np.float16)


@dataclass(frozen=True, slots=True)
class CpuRope:
    inv_freq: np.ndarray  # float32 [hd / 2]
    interleaved: bool


@dataclass(frozen=True, slots=True)
class CpuStep:
    batch: ForwardBatch
    cache: KVCache


class CpuBackend(Backend):
    """Every op one lutlm._C call (kernels release the GIL and run on lutlm's pool)."""

    cache_type = KVCache
    kernels = _C

    def linear_weight(self, linear: Linear) -> Linear:
        return linear

    def vector(self, a: np.ndarray) -> np.ndarray:
        return a

    def embedding(self, table: Embedding) -> Embedding:
        return table

    def rope(self, inv_freq: np.ndarray, interleaved: bool, max_positions: int) -> CpuRope:
        return CpuRope(np.asarray(inv_freq, np.float32), interleaved)

    @contextmanager
    def step(self, batch: ForwardBatch, cache: KVCache) -> Iterator[CpuStep]:
        self.check_cache(cache)
        yield CpuStep(batch, cache)

    def embed(self, table: Embedding, step: CpuStep) -> np.ndarray:
        return table(step.batch.token_ids)

    def qkv_rope_cache(
        self, qkv: np.ndarray, rope: CpuRope, step: CpuStep, layer: int, num_heads: int
    ) -> np.ndarray:
        b, cache = step.batch, step.cache
        return _C.qkv_rope_cache(
            qkv,
            b.positions,
            rope.inv_freq,
            rope.interleaved,
            b.slot_mapping,
            cache.k[layer],
            cache.v[layer],
            num_heads,
        )

    def paged_attention(
        self, q: np.ndarray, step: CpuStep, layer: int, num_heads: int, scale: float
    ) -> np.ndarray:
        b, cache = step.batch, step.cache
        out = _C.paged_attention(
            q,
            cache.k[layer],
            cache.v[layer],
            b.block_tables,
            b.context_lens,
            b.cu_seqlens_q,
            scale,
        )
        return out.reshape(q.shape[0], num_heads * q.shape[2])  # [T, H, hd] -> [T, H hd]

    def logits_rows(self, h: np.ndarray, step: CpuStep) -> np.ndarray:
        return h[step.batch.logits_indices]

    def lm_head(self, x: np.ndarray, w: Linear) -> np.ndarray:
        return w(x)
