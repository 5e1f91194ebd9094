"""Continuous batching: which sequences run in the next step, and how many tokens each.

Every step mixes decodes (one token per running sequence, plus the prompt-lookup drafts
it verifies) with prefill chunks, under a
token budget and a cap on running sequences, so new requests start while others are
mid-generation and one forward pass carries them all (one GEMM per layer for the whole
batch: on memory-bound hardware the weights are read once for every sequence).

Order of service: decodes first (their latency is what users feel), then running
prefills, then waiting requests in arrival order, whose cached prefix blocks are taken
from the prefix cache. While a waiting request could be admitted, running prefills get
at most half of what the decodes leave: a long prompt is prefilled in smaller chunks, and
a short request that arrives meanwhile starts in the next step instead of after the
whole long prompt (a chunk's size never changes a token's result).

When blocks run out, the newest running sequence is preempted: its blocks are freed and
it rejoins the front of the queue to be recomputed (its full blocks usually come back
from the prefix cache). No request is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lutlm.engine.block_manager import BlockManager
from lutlm.engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledSeq:
    """One sequence's share of the next step: the scheduler's decision, nothing more."""

    seq: Sequence
    num_new_tokens: int  # tokens to compute this step, from seq.num_computed_tokens
    num_drafts: int = 0  # of which prompt-lookup drafts to verify (the first of seq.draft_ids)


class Scheduler:
    """Args:
    blocks: the block manager.
    max_num_seqs: sequences running at once.
    max_num_batched_tokens: tokens per step (decodes and prefill chunks together).
    copy_block: copies one KV block's memory to another (copy-on-write).
    """

    def __init__(
        self,
        blocks: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        copy_block: Callable[[int, int], None],
    ) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(
                "max_num_seqs and max_num_batched_tokens must be at least 1, got "
                f"{max_num_seqs} and {max_num_batched_tokens}"
            )
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.copy_block = copy_block
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free_table(seq.block_table)
        seq.block_hashes.clear()

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.max_num_batched_tokens
        out: list[ScheduledSeq] = []
        scheduled: set[int] = set()
        preempted = False
        decodes = [r for r in self.running if r.num_tokens - r.num_computed_tokens == 1]
        prefills = [r for r in self.running if r.num_tokens - r.num_computed_tokens > 1]
        prefill_budget: int | None = None  # set once the decodes are served
        for seq in decodes + prefills:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this step
                continue
            remaining = seq.num_tokens - seq.num_computed_tokens
            if remaining > 1 and prefill_budget is None:
                prefill_budget = budget // 2 if self._can_admit() and budget > 1 else budget
            if remaining > 1:
                if prefill_budget == 0:
                    continue
                n = min(remaining, prefill_budget)
                prefill_budget -= n
            else:
                n = min(remaining, budget)
            num_drafts = 0
            if seq.draft_ids:  # a decode that could verify prompt-lookup drafts
                num_drafts = min(len(seq.draft_ids), budget - 1)
                if num_drafts and not self.blocks.can_allocate(
                    seq.block_table, seq.num_computed_tokens, seq.num_tokens + num_drafts
                ):
                    num_drafts = 0  # drafts are never worth a preemption
                n += num_drafts
            while not self.blocks.can_allocate(
                seq.block_table, seq.num_computed_tokens, seq.num_computed_tokens + n
            ):
                victim = next(
                    (r for r in reversed(self.running) if id(r) not in scheduled and r is not seq),
                    seq,
                )
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                continue
            self._allocate(seq, n)
            out.append(ScheduledSeq(seq, n, num_drafts))
            scheduled.add(id(seq))
            budget -= n
        while self.waiting and budget > 0 and not preempted:
            seq = self.waiting[0]
            width = 1 if seq.forked or seq.index else seq.params.n  # n sequences once forked
            if self.running and len(self.running) + width > self.max_num_seqs:
                break
            # Prompt logprobs need the logits of every prompt position: no cache hits.
            hits = (
                self.blocks.prefix_hits(seq.all_ids) if seq.params.prompt_logprobs is None else []
            )
            computed = len(hits) * self.blocks.block_size
            n = min(seq.num_tokens - computed, budget)
            if not self.blocks.can_allocate([], computed, computed + n, hits):
                break
            self.blocks.take_prefix(seq.block_table, hits)
            seq.block_hashes = [self.blocks.blocks[b].hash for b in hits]
            seq.num_computed_tokens = computed
            if seq.num_cached_tokens < 0:
                seq.num_cached_tokens = computed
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            self._allocate(seq, n)
            out.append(ScheduledSeq(seq, n))
            budget -= n
        return out

    def _can_admit(self) -> bool:
        """Whether the first waiting request fits under max_num_seqs now."""
        if not self.waiting:
            return False
        seq = self.waiting[0]
        width = 1 if seq.forked or seq.index else seq.params.n
        return len(self.running) + width <= self.max_num_seqs

    def _allocate(self, seq: Sequence, n: int) -> None:
        c = seq.num_computed_tokens
        self.blocks.allocate(seq.block_table, c, c + n, self.copy_block)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_table(seq.block_table)
        seq.block_hashes.clear()
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
