"""KV-cache block ownership: the free list and each request's block table.

Prefix caching (hashes, ref counts, LRU revival) and copy-on-write come with the
continuous-batching scheduler; this manager hands out and takes back whole blocks.
"""

from __future__ import annotations

from collections import deque


class BlockManager:
    """Owns the free list of a KVCache's blocks.

    Args:
        num_blocks: blocks in the cache.
        block_size: tokens per block.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def blocks_needed(self, block_table: list[int], num_tokens: int) -> int:
        """Extra blocks a table needs to hold num_tokens tokens."""
        return max(0, -(-num_tokens // self.block_size) - len(block_table))

    def can_allocate(self, block_table: list[int], num_tokens: int) -> bool:
        return self.blocks_needed(block_table, num_tokens) <= len(self.free_blocks)

    def allocate(self, block_table: list[int], num_tokens: int) -> None:
        """Grow block_table in place to hold num_tokens tokens (call can_allocate first)."""
        need = self.blocks_needed(block_table, num_tokens)
        if need > len(self.free_blocks):
            raise RuntimeError(
                f"KV cache exhausted: need {need} blocks, {self.num_free_blocks} free"
            )
        block_table.extend(self.free_blocks.popleft() for _ in range(need))

    def free(self, block_table: list[int]) -> None:
        self.free_blocks.extend(block_table)
        block_table.clear()
