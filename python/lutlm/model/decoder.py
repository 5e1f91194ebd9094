"""The decoder: embeddings, N x (attention, MLP), final norm, LM head.

Read top to bottom; families differ only by config switches (model/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lutlm import _C
from lutlm.model.batch import ForwardBatch
from lutlm.model.kv_cache import KVCache
from lutlm.model.linear import Linear
from lutlm.model.rope import Rope
from lutlm.model_config import ModelConfig


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
        self.scale = c.head_dim**-0.5

    def new_cache(self, num_blocks: int, block_size: int = 16) -> KVCache:
        """An empty paged KV cache this model's forward reads and writes."""
        return KVCache(self.config, num_blocks, block_size)

    def forward(self, batch: ForwardBatch, cache: KVCache) -> np.ndarray:
        """Logits [len(batch.logits_indices), vocab] (float32)."""
        c = self.config
        T, eps = len(batch.token_ids), c.rms_norm_eps
        qs = self.q_size
        h = self.embed(batch.token_ids)  # the residual stream, updated in place
        x = _C.rms_norm(h, self.layers[0].attn_norm, eps)
        for i, layer in enumerate(self.layers):
            q = _C.qkv_rope_cache(
                layer.qkv(x),
                batch.positions,
                self.rope.inv_freq,
                self.rope.interleaved,
                batch.slot_mapping,
                cache.k[i],
                cache.v[i],
                c.num_heads,
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
            attn = attn.reshape(T, qs)
            if layer.attn_sub_norm is not None:
                attn = _C.rms_norm(attn, layer.attn_sub_norm, eps)
            x = _C.add_rms_norm(h, layer.o(attn), layer.ffn_norm, eps)
            act = _C.gated_act(layer.gate_up(x), c.hidden_act == "relu2")
            if layer.ffn_sub_norm is not None:
                act = _C.rms_norm(act, layer.ffn_sub_norm, eps)
            down = layer.down(act)
            if i + 1 < len(self.layers):
                x = _C.add_rms_norm(h, down, self.layers[i + 1].attn_norm, eps)
            else:
                h += down
        if len(batch.logits_indices) == 0:  # only mid-prompt chunks this step
            return np.zeros((0, self.lm_head.out_features), np.float32)
        out = _C.rms_norm(h[batch.logits_indices], self.final_norm, eps)
        return self.lm_head(out)
