"""LLMEngine: requests in, tokens out, one `step()` at a time.

Each step either prefills a chunk of the oldest waiting request (up to the token
budget) or decodes one token for every running request in a single batched forward,
whose per-layer GEMM covers all sequences at once. When the cache runs out of blocks
during decode, the newest running request is preempted: its blocks are freed and it
is recomputed later (no request is lost). The continuous-batching scheduler with
prefix caching replaces this policy without changing the model or the sampler.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lutlm.engine.block_manager import BlockManager
from lutlm.engine.request import Request, RequestStatus
from lutlm.engine.sampler import Sampler, make_generator
from lutlm.engine.sampling_params import SamplingParams
from lutlm.model import Decoder, ForwardBatch, KVCache


@dataclass
class StepOutput:
    """What one step produced for one request."""

    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None


class LLMEngine:
    """Runs requests on a Decoder with a paged KV cache.

    Args:
        model: the decoder.
        eos_token_ids: tokens that end a sequence (unless ignore_eos).
        num_blocks: KV-cache blocks (block_size tokens each).
        block_size: tokens per block.
        max_model_len: prompt + generated tokens allowed per request.
        max_num_seqs: running requests decoded together.
        max_num_batched_tokens: tokens per prefill chunk.
        vocab_size: the tokenizer's vocabulary when the model's is padded.
        detokenize: token ids -> text, for stop strings.
    """

    def __init__(
        self,
        model: Decoder,
        eos_token_ids: Sequence[int],
        num_blocks: int,
        block_size: int = 16,
        max_model_len: int | None = None,
        max_num_seqs: int = 16,
        max_num_batched_tokens: int = 512,
        vocab_size: int | None = None,
        detokenize: Callable[[list[int]], str] | None = None,
    ) -> None:
        self.model = model
        self.eos_token_ids = set(eos_token_ids)
        self.cache = KVCache(model.config, num_blocks, block_size)
        self.blocks = BlockManager(num_blocks, block_size)
        self.block_size = block_size
        self.max_model_len = min(
            max_model_len or model.config.max_position_embeddings,
            model.config.max_position_embeddings,
        )
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.sampler = Sampler(vocab_size)
        self.detokenize = detokenize
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self._ids = itertools.count()

    def add_request(
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> str:
        """Queue a request; returns its id.

        Raises:
            ValueError: an empty prompt, or prompt + max_tokens beyond max_model_len.
        """
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        total = len(prompt_ids) + params.max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) = "
                f"{total} exceeds the model's context of {self.max_model_len} tokens"
            )
        if -(-total // self.block_size) > self.blocks.num_blocks:
            raise ValueError(
                f"{total} tokens need more KV-cache blocks than the cache holds "
                f"({self.blocks.num_blocks} of {self.block_size} tokens)"
            )
        params.check_vocab(self.sampler.vocab_size or self.model.config.vocab_size)
        rid = request_id or f"req-{next(self._ids)}"
        req = Request(rid, prompt_ids, params, make_generator(params.seed))
        self.requests[rid] = req
        self.waiting.append(req)
        return rid

    def abort(self, request_id: str) -> None:
        """Drop a request and free its blocks."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        if req in self.running:
            self.running.remove(req)
        if req in self.waiting:
            self.waiting.remove(req)
        self.blocks.free(req.block_table)
        req.status = RequestStatus.FINISHED
        req.finish_reason = "abort"

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[StepOutput]:
        """Run one prefill chunk or one batched decode; returns per-request progress."""
        if self.waiting and len(self.running) < self.max_num_seqs:
            out = self._prefill(self.waiting[0])
            if out is not None:
                return out
        if self.running:
            return self._decode()
        if self.waiting:
            raise RuntimeError("the KV cache cannot hold the next waiting request")
        return []

    # -- internals -------------------------------------------------------------------

    def _prefill(self, req: Request) -> list[StepOutput] | None:
        ids = req.all_ids  # after a preemption the generated tokens are recomputed too
        start = req.num_computed_tokens
        chunk = min(len(ids) - start, self.max_num_batched_tokens)
        if not self.blocks.can_allocate(req.block_table, start + chunk):
            return None
        self.blocks.allocate(req.block_table, start + chunk)
        batch = ForwardBatch.single(
            ids[start : start + chunk], start, req.block_table, self.block_size
        )
        logits = self.model.forward(batch, self.cache)
        req.num_computed_tokens = start + chunk
        if req.num_computed_tokens < len(ids):
            return [StepOutput(req.request_id, [], False, None)]
        self.waiting.popleft()
        if req.params.max_tokens == 0:
            self._finish(req, "length")
            return [StepOutput(req.request_id, [], True, "length")]
        req.status = RequestStatus.RUNNING
        self.running.append(req)
        return self._sample([req], logits)

    def _decode(self) -> list[StepOutput]:
        # Each running request needs room for the one token it is about to store; while
        # together they need more blocks than are free, the newest is preempted.
        def needed() -> int:
            return sum(self.blocks.blocks_needed(r.block_table, r.num_tokens) for r in self.running)

        while self.running and needed() > self.blocks.num_free_blocks:
            self._preempt(self.running[-1])
        if not self.running:
            return []
        reqs = list(self.running)
        for r in reqs:
            self.blocks.allocate(r.block_table, r.num_tokens)
        bs = self.block_size
        pos = np.array([r.num_tokens - 1 for r in reqs], np.int64)
        width = max(len(r.block_table) for r in reqs)
        tables = np.zeros((len(reqs), width), np.int32)
        for i, r in enumerate(reqs):
            tables[i, : len(r.block_table)] = r.block_table
        batch = ForwardBatch(
            token_ids=np.array([r.all_ids[-1] for r in reqs], np.int64),
            positions=pos,
            slot_mapping=(tables[np.arange(len(reqs)), pos // bs] * bs + pos % bs).astype(np.int32),
            block_tables=tables,
            context_lens=(pos + 1).astype(np.int32),
            cu_seqlens_q=np.arange(len(reqs) + 1, dtype=np.int32),
            logits_indices=np.arange(len(reqs)),
        )
        logits = self.model.forward(batch, self.cache)
        for r in reqs:
            r.num_computed_tokens = r.num_tokens
        return self._sample(reqs, logits)

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.blocks.free(req.block_table)
        req.num_computed_tokens = 0
        req.status = RequestStatus.WAITING
        self.waiting.appendleft(req)

    def _sample(self, reqs: list[Request], logits: np.ndarray) -> list[StepOutput]:
        """One sampler call for the batch, then each request's bookkeeping."""
        out = self.sampler.sample(
            logits,
            [r.params for r in reqs],
            [r.prompt_ids for r in reqs],
            [r.output_ids for r in reqs],
            [r.generator for r in reqs],
        )
        steps = []
        for i, r in enumerate(reqs):
            if r.params.logprobs is not None:
                r.logprobs.append((out.logprobs[i], out.top_logprobs[i]))
            steps.append(self._append(r, int(out.token_ids[i])))
        return steps

    def _append(self, req: Request, token: int) -> StepOutput:
        p = req.params
        req.output_ids.append(token)
        reason = None
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            reason = "stop"
        elif (
            p.stop and self.detokenize and any(s in self.detokenize(req.output_ids) for s in p.stop)
        ):
            reason = "stop"
        elif len(req.output_ids) >= p.max_tokens:
            reason = "length"
        if reason:
            self._finish(req, reason)
        return StepOutput(req.request_id, [token], reason is not None, reason)

    def _finish(self, req: Request, reason: str) -> None:
        req.status = RequestStatus.FINISHED
        req.finish_reason = reason
        if req in self.running:
            self.running.remove(req)
        self.blocks.free(req.block_table)
