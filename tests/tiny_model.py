"""A tiny random Llama-family Decoder with f32 weights, built without any checkpoint.

With f32 weights every row of a batch is computed on its own (no shared activation
scales), so a sequence's logits do not depend on what else is in the batch, how its
prompt was chunked or whether its prefix came from the cache: engine tests can demand
bit-identical tokens.
"""

import numpy as np

from lutlm.model.config import ModelConfig
from lutlm.model.decoder import Decoder, LayerWeights
from lutlm.quant import Embedding, Linear

VOCAB = 96


def tiny_decoder(seed: int = 0, num_layers: int = 2) -> Decoder:
    rng = np.random.default_rng(seed)
    c = ModelConfig.for_family(
        "llama",
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_layers=num_layers,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_position_embeddings=512,
    )

    def w(n: int, k: int, scale: float = 1.0) -> Linear:
        return Linear((rng.standard_normal((n, k)) * scale / np.sqrt(k)).astype(np.float32))

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(c.hidden_size)).astype(np.float32)

    qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
    layers = [
        LayerWeights(
            attn_norm=norm(),
            qkv=w(qkv, c.hidden_size),
            o=w(c.hidden_size, c.num_heads * c.head_dim),
            ffn_norm=norm(),
            gate_up=w(2 * c.intermediate_size, c.hidden_size),
            down=w(c.hidden_size, c.intermediate_size),
        )
        for _ in range(num_layers)
    ]
    embed = Embedding(rng.standard_normal((VOCAB, c.hidden_size)).astype(np.float32))
    # A sharp head: greedy choices are far from ties.
    return Decoder(c, embed, layers, norm(), w(VOCAB, c.hidden_size, scale=8.0))
