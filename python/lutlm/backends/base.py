"""The backend contract: the operations model/decoder.py's one layer loop calls.

A backend places a model's parameters once (:meth:`Backend.linear_weight`,
:meth:`~Backend.vector`, :meth:`~Backend.embedding`, :meth:`~Backend.rope`), owns its KV
cache (:meth:`~Backend.new_cache`) and runs the ops of a forward step on what it placed.
The loop never looks inside what the ops return: an ``Array`` is a numpy array on the CPU
backend (backends/cpu.py, lutlm._C) and a torch tensor on the GPU (backends/gpu.py,
lutlm.kernels). Shapes below use T (tokens of the batch), D (hidden size), H and KV
(query and kv heads), hd (head dim), F (intermediate size), V (vocab); every Array is
float32 with contiguous rows unless said otherwise.

A new op is one abstract method here, one implementation per backend and one call in the
loop; tests/test_backends.py checks that every backend implements exactly these.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import numpy as np

from lutlm.backends.batch import ForwardBatch
from lutlm.model_config import ModelConfig
from lutlm.quant.layers import Embedding, Linear

# A backend's array: numpy on the CPU, torch on the GPU. Opaque to the layer loop.
Array = Any


class PagedKVCache:
    """fp16 K and V blocks of every layer, [num_blocks, block_size, n_kv_heads, head_dim]
    each (DESIGN, "Kernel contracts"), in the backend's memory. Which block belongs to
    whom is the engine's business (engine/block_manager.py); this holds only the memory.
    A backend's subclass says where the blocks live (:meth:`_zeros`)."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int = 16) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}"
            )
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.k = [self._zeros(shape) for _ in range(config.num_layers)]
        self.v = [self._zeros(shape) for _ in range(config.num_layers)]

    def _zeros(self, shape: tuple[int, ...]) -> Array:
        """An fp16 array of zeros in the backend's memory."""
        raise NotImplementedError

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int = 16) -> int:
        """Bytes of one block's K and V over all layers (fp16: 2 bytes a value)."""
        return 2 * 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim

    def copy_block(self, src: int, dst: int) -> None:
        """Copy one block's K and V in every layer (copy-on-write of a shared block)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[dst] = k[src]
            v[dst] = v[src]


class Backend(ABC):
    """Where a decoder runs: placement of its parameters, its KV cache, its ops."""

    # The PagedKVCache subclass new_cache returns; step refuses any other cache.
    cache_type: ClassVar[type[PagedKVCache]]
    # The kernel module whose rms_norm, add_rms_norm and gated_act are this contract's
    # (same arguments, same meaning): lutlm._C on the CPU, lutlm.kernels on the GPU.
    kernels: ClassVar[Any]

    # -- placing a model's parameters (once, when a Decoder is built) ------------------

    @abstractmethod
    def linear_weight(self, linear: Linear) -> Any:
        """A linear layer (packed weight of a quant.FORMATS row, bias, act_bits) in the
        form :meth:`linear` and :meth:`lm_head` take."""

    @abstractmethod
    def vector(self, a: np.ndarray) -> Array:
        """A float32 vector (a norm's weight) as the ops take it."""

    @abstractmethod
    def embedding(self, table: Embedding) -> Any:
        """The token embedding float32 [V, D] as :meth:`embed` takes it."""

    @abstractmethod
    def rope(self, inv_freq: np.ndarray, interleaved: bool, max_positions: int) -> Any:
        """RoPE as :meth:`qkv_rope_cache` takes it.

        Args:
            inv_freq: float32 [hd / 2], the inverse frequencies (model/rope.py).
            interleaved: rotate pairs (x[2i], x[2i+1]) (GGUF llama weights), else halves.
            max_positions: the positions to prepare for (more may come).
        """

    # -- memory ------------------------------------------------------------------------

    def new_cache(self, config: ModelConfig, num_blocks: int, block_size: int) -> PagedKVCache:
        """An empty paged KV cache in this backend's memory."""
        return self.cache_type(config, num_blocks, block_size)

    # -- one forward step ----------------------------------------------------------------

    @abstractmethod
    def step(self, batch: ForwardBatch, cache: PagedKVCache) -> AbstractContextManager[Any]:
        """A context for one forward over batch: entering it gives the step handle every
        op below takes (the batch's metadata where the ops read it, and the cache).

        Raises:
            TypeError: cache is not this backend's (from :meth:`new_cache`).
        """

    def check_cache(self, cache: PagedKVCache) -> None:
        """TypeError unless cache is this backend's."""
        if not isinstance(cache, self.cache_type):
            raise TypeError(
                f"{type(self).__name__} needs the cache from model.new_cache(), got "
                f"{type(cache).__name__}"
            )

    @abstractmethod
    def embed(self, table: Any, step: Any) -> Array:
        """The rows of the batch's tokens: a new [T, D] array (the residual stream,
        updated in place by :meth:`add_rms_norm` and :meth:`add`)."""

    def linear(self, x: Array, w: Any) -> Array:
        """x [T, K] @ W.T (+ bias): [T, N]. A backend's placed linear is callable."""
        return w(x)

    def rms_norm(self, x: Array, w: Array, eps: float) -> Array:
        """RMSNorm of each row of x [T, n] times w [n]: a new [T, n]."""
        return self.kernels.rms_norm(x, w, eps)

    def add_rms_norm(self, h: Array, delta: Array, w: Array, eps: float) -> Array:
        """h += delta in place (both [T, D]); returns rms_norm(h, w, eps), a new [T, D]."""
        return self.kernels.add_rms_norm(h, delta, w, eps)

    def add(self, h: Array, delta: Array) -> None:
        """h += delta in place (both [T, D])."""
        h += delta

    @abstractmethod
    def qkv_rope_cache(
        self, qkv: Array, rope: Any, step: Any, layer: int, num_heads: int
    ) -> Array:
        """Split the qkv rows [T, (H + 2 KV) hd] into q, k, v; rotate q and k by RoPE at
        the batch's positions; write k and v (fp16) to the cache of `layer` at the
        batch's slots (slot -1: not written).

        Returns:
            The rotated queries, as :meth:`paged_attention` takes them (CPU: [T, H, hd];
            GPU: the qkv rows, rotated in place, whose first H hd columns are q).
        """

    @abstractmethod
    def paged_attention(
        self, q: Array, step: Any, layer: int, num_heads: int, scale: float
    ) -> Array:
        """Causal attention of the batch's tokens over their sequences' cached keys and
        values of `layer` (GQA; the new tokens are already in the cache): [T, H hd]."""

    def gated_act(self, gate_up: Array, relu2: bool) -> Array:
        """act(gate) * up for the stacked rows gate_up [T, 2F]: [T, F]; act is SiLU, or
        relu² (BitNet) when relu2."""
        return self.kernels.gated_act(gate_up, relu2)

    @abstractmethod
    def logits_rows(self, h: Array, step: Any) -> Array:
        """The rows of h [T, D] whose logits the batch wants (its logits_indices): [L, D]."""

    @abstractmethod
    def lm_head(self, x: Array, w: Any) -> np.ndarray:
        """x [L, D] @ W.T: the logits as a float32 numpy array [L, V] on the host."""
