"""The paged KV cache memory: per layer, K and V of [num_blocks, block_size, n_kv, hd]."""

from __future__ import annotations

import numpy as np

from lutlm.model_config import ModelConfig


class KVCache:
    """fp16 key/value blocks for every layer. Which block belongs to whom is the
    engine's business (engine/block_manager.py); this holds only the memory."""

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int = 16) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}"
            )
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.k = [np.zeros(shape, np.float16) for _ in range(config.num_layers)]
        self.v = [np.zeros(shape, np.float16) for _ in range(config.num_layers)]

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int = 16) -> int:
        return 2 * 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim

    def copy_block(self, src: int, dst: int) -> None:
        """Copy one block's K and V in every layer (copy-on-write of a shared block)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[dst] = k[src]
            v[dst] = v[src]
