"""The flat batch a forward pass runs over (built by the engine's model runner; the backend
ops read its metadata: model/decoder.py passes it to Backend.step)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class ForwardBatch:
    """Tokens of several sequences laid end to end.

    Sequence s contributes tokens cu_seqlens_q[s]:cu_seqlens_q[s+1]; they are its last
    q_len tokens, at positions context_lens[s] - q_len .. context_lens[s] - 1.
    """

    token_ids: np.ndarray  # int64 [T]
    positions: np.ndarray  # int64 [T]
    slot_mapping: np.ndarray  # int32 [T]: cache slot (block * block_size + offset), -1 = skip
    block_tables: np.ndarray  # int32 [S, max_blocks]
    context_lens: np.ndarray  # int32 [S]: cached tokens after this step, new ones included
    cu_seqlens_q: np.ndarray  # int32 [S + 1]
    logits_indices: np.ndarray  # int64 [L]: rows of T whose logits are wanted

    @classmethod
    def single(
        cls,
        token_ids: list[int],
        start: int,
        block_table: list[int],
        block_size: int,
        all_logits: bool = False,
    ) -> ForwardBatch:
        """One sequence's tokens token_ids at positions start.. (a prefill or a chunk)."""
        n = len(token_ids)
        pos = np.arange(start, start + n, dtype=np.int64)
        table = np.asarray(block_table, np.int32)
        slots = table[pos // block_size] * block_size + pos % block_size
        return cls(
            token_ids=np.asarray(token_ids, np.int64),
            positions=pos,
            slot_mapping=slots.astype(np.int32),
            block_tables=table[None, :],
            context_lens=np.array([start + n], np.int32),
            cu_seqlens_q=np.array([0, n], np.int32),
            logits_indices=np.arange(n) if all_logits else np.array([n - 1]),
        )
