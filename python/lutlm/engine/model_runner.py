"""ModelRunner: the scheduler's decision, as one forward pass and its samples.

It flattens the scheduled sequences into one `ForwardBatch` (the only place that
computes KV-cache slots: slot = block_table[pos // block_size] * block_size + pos %
block_size), runs the model, and turns logits rows into tokens and logprobs with the
sampler. It changes no sequence: the engine applies what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from lutlm.engine.sampler import Sampler, SamplerOutput
from lutlm.engine.scheduler import ScheduledSeq
from lutlm.engine.sequence import Sequence
from lutlm.model import ForwardBatch


def wants_all_rows(seq: Sequence, start: int) -> bool:
    """Whether a chunk starting at `start` needs a logits row at every position (prompt
    logprobs)."""
    return seq.params.prompt_logprobs is not None and start < len(seq.prompt_ids)


class ModelRunner:
    """Args:
    model: the decoder (`forward(batch, cache)` -> float32 logits [rows, V]).
    cache: the model's KV cache.
    block_size: tokens per KV block.
    sampler: the sampler.
    """

    def __init__(self, model, cache, block_size: int, sampler: Sampler) -> None:
        self.model, self.cache, self.block_size, self.sampler = model, cache, block_size, sampler

    def run(self, scheduled: list[ScheduledSeq]) -> tuple[np.ndarray, list[int]]:
        """One forward over the scheduled chunks: the logits rows, and each sequence's
        first row in them."""
        batch, first_row = self.prepare(scheduled)
        return self.model.forward(batch, self.cache), first_row

    def prepare(self, scheduled: list[ScheduledSeq]) -> tuple[ForwardBatch, list[int]]:
        """The flat batch, and for each scheduled sequence its first logits row.

        Note: a chunk is the sequence's tokens from num_computed_tokens on (prompt, then
        output), and for a decode verifying drafts, its last token then the drafts. A
        logits row is kept for a chunk's last position when that completes the sequence,
        for every position when prompt logprobs are asked for or drafts are verified.
        """
        bs = self.block_size
        tokens: list[int] = []
        positions, slots, rows, first_row = [], [], [], []
        cu = [0]
        width = max(len(s.seq.block_table) for s in scheduled)
        tables = np.zeros((len(scheduled), width), np.int32)
        for i, s in enumerate(scheduled):
            seq, n = s.seq, s.num_new_tokens
            c = seq.num_computed_tokens
            p = len(seq.prompt_ids)
            tokens += (
                seq.prompt_ids[c : c + n] + seq.output_ids[max(0, c - p) : max(0, c + n - p)]
                if c < p
                else seq.output_ids[c - p : c - p + n - len(seq.draft_ids)] + seq.draft_ids
            )
            pos = np.arange(c, c + n, dtype=np.int64)
            table = np.asarray(seq.block_table, np.int32)
            tables[i, : len(table)] = table
            positions.append(pos)
            slots.append(table[pos // bs] * bs + pos % bs)
            first_row.append(len(rows))
            if wants_all_rows(seq, c) or seq.draft_ids:
                rows += range(cu[-1], cu[-1] + n)
            elif c + n == seq.num_tokens:
                rows.append(cu[-1] + n - 1)
            cu.append(cu[-1] + n)
        batch = ForwardBatch(
            token_ids=np.asarray(tokens, np.int64),
            positions=np.concatenate(positions),
            slot_mapping=np.concatenate(slots).astype(np.int32),
            block_tables=tables,
            context_lens=np.array(
                [s.seq.num_computed_tokens + s.num_new_tokens for s in scheduled], np.int32
            ),
            cu_seqlens_q=np.asarray(cu, np.int32),
            logits_indices=np.asarray(rows, np.int64),
        )
        return batch, first_row

    def sample(self, seqs: Seq[tuple[Sequence, int]], logits: np.ndarray) -> SamplerOutput:
        """One sampler call for the sequences, each at its logits row."""
        return self.sampler.sample(
            logits[[row for _, row in seqs]],
            [s.params for s, _ in seqs],
            [s.prompt_ids for s, _ in seqs],
            [s.output_ids for s, _ in seqs],
            [s.generator for s, _ in seqs],
        )

    def prompt_logprobs(
        self, seq: Sequence, start: int, n: int, logits: np.ndarray, row: int
    ) -> list:
        """Logprobs of the prompt tokens that positions start..start+n-1 predict and
        that are not recorded yet (entry j is prompt token j + 1's; a recompute after a
        preemption skips those already recorded)."""
        if start >= len(seq.prompt_ids):
            return []
        want = [
            (row + i, p + 1)
            for i, p in enumerate(range(start, start + n))
            if p + 1 < len(seq.prompt_ids) and p >= len(seq.prompt_logprobs)
        ]
        if not want:
            return []
        return self.sampler.token_logprobs(
            logits[[r for r, _ in want]],
            [seq.prompt_ids[j] for _, j in want],
            seq.params.prompt_logprobs,
        )
