"""The decoder: embeddings, N x (attention, MLP), final norm, LM head.

The one layer loop of lutlm, read top to bottom; families differ only by config
switches (model_config.py), devices only by the backend whose ops it calls
(backends/base.py: the CPU's over lutlm._C, the GPU's over lutlm.kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from lutlm.backends.base import Backend, PagedKVCache
from lutlm.backends.batch import ForwardBatch
from lutlm.backends.cpu import CpuBackend
from lutlm.model.rope import inverse_frequencies
from lutlm.model_config import ModelConfig
from lutlm.quant.layers import Embedding, Linear


@dataclass
class LayerWeights:
    """One layer's parameters: host arrays and Linears as loaded, or what a backend made
    of them (Backend.vector / Backend.linear_weight)."""

    attn_norm: np.ndarray
    qkv: Linear  # q, k, v stacked along the output dimension
    o: Linear
    ffn_norm: np.ndarray
    gate_up: Linear  # gate and up stacked
    down: Linear
    attn_sub_norm: np.ndarray | None = None  # BitNet
    ffn_sub_norm: np.ndarray | None = None

    def placed(
        self, vector: Callable[[np.ndarray], Any], linear: Callable[[Linear], Any]
    ) -> LayerWeights:
        """The layer with each Linear given to linear and each vector to vector."""
        parts = {}
        for f in fields(self):
            v = getattr(self, f.name)
            parts[f.name] = None if v is None else linear(v) if isinstance(v, Linear) else vector(v)
        return LayerWeights(**parts)


class Decoder:
    """Forward pass over a ForwardBatch with a paged KV cache, on a backend.

    Args:
        config: the model's shape and family switches.
        embed, layers, final_norm, lm_head: the parameters as loaded (host arrays).
        backend: where it runs (default: the CPU); the parameters are placed on it once.
    """

    def __init__(
        self,
        config: ModelConfig,
        embed: Embedding,
        layers: list[LayerWeights],
        final_norm: np.ndarray,
        lm_head: Linear,
        backend: Backend | None = None,
    ) -> None:
        self.config = c = config
        self.backend = b = CpuBackend() if backend is None else backend
        self.embed = b.embedding(embed)
        self.layers = [lw.placed(b.vector, b.linear_weight) for lw in layers]
        self.final_norm = b.vector(final_norm)
        self.lm_head = b.linear_weight(lm_head)
        inv_freq = inverse_frequencies(c).astype(np.float32)
        self.rope = b.rope(inv_freq, c.rope_interleaved, c.max_position_embeddings)
        self.scale = c.head_dim**-0.5

    def on(self, backend: Backend) -> Decoder:
        """This model on another backend (e.g. backends.gpu.GpuBackend), its weights placed
        there once; this one must be on the CPU, whose parameters are the host arrays."""
        if not isinstance(self.backend, CpuBackend):
            raise ValueError(f"only a CPU model can be placed; this one is on {self.backend}")
        return Decoder(self.config, self.embed, self.layers, self.final_norm, self.lm_head, backend)

    def new_cache(self, num_blocks: int, block_size: int = 16) -> PagedKVCache:
        """An empty paged KV cache this model's forward reads and writes."""
        return self.backend.new_cache(self.config, num_blocks, block_size)

    def forward(self, batch: ForwardBatch, cache: PagedKVCache) -> np.ndarray:
        """Logits [len(batch.logits_indices), vocab] (float32, on the host)."""
        c, b = self.config, self.backend
        eps, relu2 = c.rms_norm_eps, c.hidden_act == "relu2"
        with b.step(batch, cache) as step:
            h = b.embed(self.embed, step)  # the residual stream, updated in place
            x = b.rms_norm(h, self.layers[0].attn_norm, eps)
            for i, layer in enumerate(self.layers):
                q = b.qkv_rope_cache(b.linear(x, layer.qkv), self.rope, step, i, c.num_heads)
                attn = b.paged_attention(q, step, i, c.num_heads, self.scale)
                if layer.attn_sub_norm is not None:
                    attn = b.rms_norm(attn, layer.attn_sub_norm, eps)
                x = b.add_rms_norm(h, b.linear(attn, layer.o), layer.ffn_norm, eps)
                act = b.gated_act(b.linear(x, layer.gate_up), relu2)
                if layer.ffn_sub_norm is not None:
                    act = b.rms_norm(act, layer.ffn_sub_norm, eps)
                down = b.linear(act, layer.down)
                if i + 1 < len(self.layers):
                    x = b.add_rms_norm(h, down, self.layers[i + 1].attn_norm, eps)
                else:
                    b.add(h, down)
            if len(batch.logits_indices) == 0:  # only mid-prompt chunks this step
                return np.zeros((0, c.vocab_size), np.float32)
            out = b.rms_norm(b.logits_rows(h, step), self.final_norm, eps)
            return b.lm_head(out, self.lm_head)
