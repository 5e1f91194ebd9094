"""The CPU backend's paged KV cache (backends/cpu.py), under the name callers size and
build it by: KVCache(config, num_blocks, block_size), KVCache.bytes_per_block(config)."""

from lutlm.backends.cpu import KVCache

__all__ = ["KVCache"]
