"""The decoder: embeddings, N x (attention, MLP), final norm, LM head.

Read top to bottom; families differ only by config switches (model/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lutlm import _C
from lutlm.model.batch import ForwardBatch
from lutlm.model.config import ModelConfig
from lutlm.model.kv_cache import KVCache
from lutlm.model.linear import Linear
from lutlm.model.rope import Rope


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * weight


@dataclass
class LayerWeights:
    attn_norm: np.ndarray
    qkv: Linear  # q, k, v stacked along the output dimension
    o: Linear
    ffn_norm: np.ndarray
    gate_up: Linear  # gate and up stacked
    down: Linear
    attn_sub_norm: np.ndarray | None = None  # BitNet
    ffn_sub_norm: np.ndarray | None = None


class Embedding:
    """Token embeddings, float32 rows gathered by id (exact for every GGUF type)."""

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.shape = self.weight.shape

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.weight[ids]


class Decoder:
    """Forward pass over a ForwardBatch with a paged KV cache."""

    def __init__(
        self,
        config: ModelConfig,
        embed: Embedding,
        layers: list[LayerWeights],
        final_norm: np.ndarray,
        lm_head: Linear,
    ) -> None:
        self.config = config
        self.embed, self.layers, self.final_norm, self.lm_head = embed, layers, final_norm, lm_head
        self.rope = Rope(config)
        c = config
        self.q_size = c.num_heads * c.head_dim
        self.kv_size = c.num_kv_heads * c.head_dim
        self.scale = c.head_dim**-0.5

    def forward(self, batch: ForwardBatch, cache: KVCache) -> np.ndarray:
        """Logits [len(batch.logits_indices), vocab] (float32)."""
        c = self.config
        T = len(batch.token_ids)
        h = self.embed(batch.token_ids)
        for i, layer in enumerate(self.layers):
            x = rms_norm(h, layer.attn_norm, c.rms_norm_eps)
            qkv = layer.qkv(x)
            q = qkv[:, : self.q_size].reshape(T, c.num_heads, c.head_dim)
            k = qkv[:, self.q_size : self.q_size + self.kv_size].reshape(T, c.num_kv_heads, -1)
            v = qkv[:, self.q_size + self.kv_size :].reshape(T, c.num_kv_heads, c.head_dim)
            q = self.rope(q, batch.positions)
            k = self.rope(k, batch.positions)
            _C.write_kv_cache(
                k, np.ascontiguousarray(v), batch.slot_mapping, cache.k[i], cache.v[i]
            )
            attn = _C.paged_attention(
                q,
                cache.k[i],
                cache.v[i],
                batch.block_tables,
                batch.context_lens,
                batch.cu_seqlens_q,
                self.scale,
            )
            attn = attn.reshape(T, self.q_size)
            if layer.attn_sub_norm is not None:
                attn = rms_norm(attn, layer.attn_sub_norm, c.rms_norm_eps)
            h = h + layer.o(attn)
            x = rms_norm(h, layer.ffn_norm, c.rms_norm_eps)
            gu = layer.gate_up(x)
            gate, up = gu[:, : c.intermediate_size], gu[:, c.intermediate_size :]
            if c.hidden_act == "relu2":
                act = np.square(np.maximum(gate, 0)) * up
            else:
                act = gate / (1.0 + np.exp(-gate)) * up
            if layer.ffn_sub_norm is not None:
                act = rms_norm(act, layer.ffn_sub_norm, c.rms_norm_eps)
            h = h + layer.down(act.astype(np.float32, copy=False))
        out = rms_norm(h[batch.logits_indices], self.final_norm, c.rms_norm_eps)
        return self.lm_head(out.astype(np.float32, copy=False))
