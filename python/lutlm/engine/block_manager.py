"""KV-cache block ownership: reference counts, the prefix cache and copy-on-write.

A block is free when no sequence references it. Free blocks sit in LRU order (the
least recently freed is reused first); a free block that holds a full, hashed block of
tokens stays findable in the prefix cache until it is reused, so a later request with
the same prefix takes it back instead of recomputing it.

A full block's hash chains its parent's hash with its own tokens, so equal hashes mean
equal prefixes (up to a 2^-64 collision of Python's tuple hash; the block's own tokens
are compared too). Only full blocks whose K/V have been computed are hashed.

Sequences forked for n > 1 share every block of their prompt; a sequence about to write
into a block others also hold first copies it (copy-on-write).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "tokens")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.tokens: tuple[int, ...] = ()


def chain_hash(parent: int | None, tokens: Sequence[int]) -> int:
    """The prefix-cache key of a full block after the block whose key is parent."""
    return hash((parent, tuple(tokens)))


class BlockManager:
    """Owns the blocks of a KVCache.

    Args:
        num_blocks: blocks in the cache.
        block_size: tokens per block.
        enable_prefix_caching: keep freed full blocks findable by their hash.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[int, int] = {}  # hash -> block id
        self.hits = self.queries = 0  # prefix-cache blocks found / looked up

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence holds (cached ones included: they are reusable)."""
        return len(self.free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by sequences."""
        return 1.0 - len(self.free) / self.num_blocks

    # -- prefix cache ----------------------------------------------------------------

    def prefix_hits(self, token_ids: Sequence[int]) -> list[int]:
        """Cached blocks holding the longest run of full blocks of token_ids[:-1].

        The last token is never covered: its logits must be computed.
        """
        if not self.enable_prefix_caching:
            return []
        bs, out, parent = self.block_size, [], None
        for j in range((len(token_ids) - 1) // bs):
            tokens = tuple(token_ids[j * bs : (j + 1) * bs])
            h = chain_hash(parent, tokens)
            bid = self.cached.get(h)
            if bid is None or self.blocks[bid].tokens != tokens:
                break
            out.append(bid)
            parent = h
        self.queries += (len(token_ids) - 1) // bs
        self.hits += len(out)
        return out

    def cache_full_blocks(
        self, block_table: list[int], hashes: list[int], token_ids: Sequence[int], num_computed: int
    ) -> None:
        """Hash the blocks of block_table that became full and computed; hashes (the
        chain so far, one per hashed block) grows in place."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for j in range(len(hashes), num_computed // bs):
            tokens = tuple(token_ids[j * bs : (j + 1) * bs])
            h = chain_hash(hashes[-1] if hashes else None, tokens)
            hashes.append(h)
            block = self.blocks[block_table[j]]
            if block.hash is None and h not in self.cached:
                block.hash, block.tokens = h, tokens
                self.cached[h] = block.block_id

    # -- allocation ------------------------------------------------------------------

    def blocks_needed(
        self, block_table: list[int], num_computed: int, num_tokens: int, prefix: Sequence[int] = ()
    ) -> int:
        """Free blocks it takes to extend block_table (after appending the cached
        prefix blocks) to num_tokens tokens, of which num_computed are in the cache,
        counting the copy of a shared partial block about to be written."""
        bs = self.block_size
        need = max(0, -(-num_tokens // bs) - len(block_table) - len(prefix))
        need += sum(1 for b in prefix if self.blocks[b].ref_count == 0)
        if num_computed % bs and num_tokens > num_computed:
            need += self.blocks[block_table[num_computed // bs]].ref_count > 1
        return need

    def can_allocate(
        self, block_table: list[int], num_computed: int, num_tokens: int, prefix: Sequence[int] = ()
    ) -> bool:
        return self.blocks_needed(block_table, num_computed, num_tokens, prefix) <= len(self.free)

    def take_prefix(self, block_table: list[int], prefix: Sequence[int]) -> None:
        """Append cached blocks to an empty block_table, taking a reference to each."""
        for bid in prefix:
            block = self.blocks[bid]
            if block.ref_count == 0:
                del self.free[bid]
            block.ref_count += 1
            block_table.append(bid)

    def allocate(
        self,
        block_table: list[int],
        num_computed: int,
        num_tokens: int,
        copy_block: Callable[[int, int], None],
    ) -> None:
        """Make block_table hold num_tokens tokens, of which num_computed already are.

        A partial last block shared with another sequence is first copied (copy_block(
        src, dst) copies the K/V memory). Call can_allocate first.
        """
        bs = self.block_size
        if num_computed % bs and num_tokens > num_computed:
            idx = num_computed // bs
            last = self.blocks[block_table[idx]]
            if last.ref_count > 1:
                new = self._pop_free()
                copy_block(last.block_id, new)
                last.ref_count -= 1
                block_table[idx] = new
        for _ in range(max(0, -(-num_tokens // bs) - len(block_table))):
            block_table.append(self._pop_free())

    def _pop_free(self) -> int:
        if not self.free:
            raise RuntimeError("KV cache exhausted: no free block (call can_allocate first)")
        bid, _ = self.free.popitem(last=False)
        block = self.blocks[bid]
        if block.hash is not None:  # evicted from the prefix cache
            if self.cached.get(block.hash) == bid:
                del self.cached[block.hash]
            block.hash, block.tokens = None, ()
        block.ref_count = 1
        return bid

    def fork(self, block_table: list[int]) -> list[int]:
        """A new table sharing every block of block_table."""
        for bid in block_table:
            self.blocks[bid].ref_count += 1
        return list(block_table)

    def trim(self, block_table: list[int], num_blocks: int) -> None:
        """Drop the blocks of block_table beyond its first num_blocks (the slots of
        rejected draft tokens), freeing those nobody else holds."""
        while len(block_table) > num_blocks:
            block = self.blocks[block_table.pop()]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block.block_id] = None

    def free_table(self, block_table: list[int]) -> None:
        """Drop block_table's references; blocks nobody holds become free, the table's
        tail first so that shared prefixes stay cached longest."""
        for bid in reversed(block_table):
            block = self.blocks[bid]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[bid] = None
        block_table.clear()
