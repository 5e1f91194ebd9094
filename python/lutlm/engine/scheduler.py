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
from lutlm.engine.request import Request, RequestStatus


@dataclass(slots=True)
class ScheduledSeq:
    req: Request
    num_new_tokens: int  # tokens to compute this step, from req.num_computed_tokens


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
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def remove(self, req: Request) -> None:
        """Take a sequence out of the queues and free its blocks."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.blocks.free_table(req.block_table)
        req.block_hashes.clear()

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
        for req in decodes + prefills:
            if budget == 0:
                break
            if req.status is not RequestStatus.RUNNING:  # preempted earlier in this step
                continue
            remaining = req.num_tokens - req.num_computed_tokens
            if remaining > 1 and prefill_budget is None:
                prefill_budget = budget // 2 if self._can_admit() and budget > 1 else budget
            if remaining > 1:
                if prefill_budget == 0:
                    continue
                n = min(remaining, prefill_budget)
                prefill_budget -= n
            else:
                n = min(remaining, budget)
            if req.draft_ids:  # a decode verifying prompt-lookup drafts
                del req.draft_ids[budget - 1 :]
                if req.draft_ids and not self.blocks.can_allocate(
                    req.block_table, req.num_computed_tokens, req.num_tokens + len(req.draft_ids)
                ):
                    req.draft_ids.clear()  # drafts are never worth a preemption
                n += len(req.draft_ids)
            while not self.blocks.can_allocate(
                req.block_table, req.num_computed_tokens, req.num_computed_tokens + n
            ):
                victim = next(
                    (r for r in reversed(self.running) if id(r) not in scheduled and r is not req),
                    req,
                )
                self._preempt(victim)
                preempted = True
                if victim is req:
                    break
            if req.status is not RequestStatus.RUNNING:
                continue
            self._allocate(req, n)
            out.append(ScheduledSeq(req, n))
            scheduled.add(id(req))
            budget -= n
        while self.waiting and budget > 0 and not preempted:
            req = self.waiting[0]
            width = 1 if req.forked or req.index else req.params.n  # n sequences once forked
            if self.running and len(self.running) + width > self.max_num_seqs:
                break
            # Prompt logprobs need the logits of every prompt position: no cache hits.
            hits = (
                self.blocks.prefix_hits(req.all_ids) if req.params.prompt_logprobs is None else []
            )
            computed = len(hits) * self.blocks.block_size
            n = min(req.num_tokens - computed, budget)
            if not self.blocks.can_allocate([], computed, computed + n, hits):
                break
            self.blocks.take_prefix(req.block_table, hits)
            req.block_hashes = [self.blocks.blocks[b].hash for b in hits]
            req.num_computed_tokens = computed
            if req.num_cached_tokens < 0:
                req.num_cached_tokens = computed
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            self._allocate(req, n)
            out.append(ScheduledSeq(req, n))
            budget -= n
        return out

    def _can_admit(self) -> bool:
        """Whether the first waiting request fits under max_num_seqs now."""
        if not self.waiting:
            return False
        req = self.waiting[0]
        width = 1 if req.forked or req.index else req.params.n
        return len(self.running) + width <= self.max_num_seqs

    def _allocate(self, req: Request, n: int) -> None:
        c = req.num_computed_tokens
        self.blocks.allocate(req.block_table, c, c + n, self.copy_block)

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.blocks.free_table(req.block_table)
        req.block_hashes.clear()
        req.draft_ids.clear()
        req.num_computed_tokens = 0
        req.status = RequestStatus.WAITING
        self.waiting.appendleft(req)
        self.num_preemptions += 1
