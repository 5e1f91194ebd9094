"""LLMEngine: requests in, immutable outputs out, one `step()` at a time.

A step: drafting proposes prompt-lookup drafts for the decodes (drafting.py), the
scheduler decides which sequences run and how many tokens each (scheduler.py), the
model runner flattens them into one ForwardBatch, runs the model and samples
(model_runner.py), and the engine applies the results: appends tokens, decides each
finish reason once (EOS or a stop token, a stop string found by the sequence's text,
max_tokens) and emits a `StepOutput` per sequence that moved. A request whose sequences
are all done becomes a `RequestOutput`, collected with `pop_finished()`. Requests for
n > 1 sequences fork after their prompt: the siblings share its KV blocks
(copy-on-write) and sample from the same logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import numpy as np

from lutlm.engine import drafting
from lutlm.engine.block_manager import BlockManager
from lutlm.engine.errors import InvalidRequest
from lutlm.engine.model_runner import ModelRunner, wants_all_rows
from lutlm.engine.outputs import CompletionOutput, RequestOutput, StepOutput, TextStream
from lutlm.engine.sampler import Sampler, make_generator
from lutlm.engine.sampling_params import SamplingParams
from lutlm.engine.scheduler import Scheduler
from lutlm.engine.sequence import Sequence, SequenceStatus

if TYPE_CHECKING:
    from lutlm.tokenizer import Tokenizer


class LLMEngine:
    """Runs requests on a model with a paged KV cache.

    Args:
        model: the decoder (`config`, `new_cache(num_blocks, block_size)`,
            `forward(batch, cache)` -> float32 logits).
        eos_token_ids: tokens that end a sequence (unless ignore_eos).
        num_blocks: KV-cache blocks (block_size tokens each).
        block_size: tokens per block.
        max_model_len: prompt + generated tokens allowed per request.
        max_num_seqs: sequences running at once.
        max_num_batched_tokens: tokens per step (decodes plus prefill chunks).
        vocab_size: the tokenizer's vocabulary when the model's is padded.
        tokenizer: turns output tokens into text (and finds stop strings); None gives
            outputs without text and refuses requests with stop strings.
        enable_prefix_caching: reuse the KV blocks of earlier requests' prefixes.
    """

    def __init__(
        self,
        model,
        eos_token_ids: Seq[int],
        num_blocks: int,
        block_size: int = 16,
        max_model_len: int | None = None,
        max_num_seqs: int = 16,
        max_num_batched_tokens: int = 512,
        vocab_size: int | None = None,
        tokenizer: Tokenizer | None = None,
        enable_prefix_caching: bool = True,
    ) -> None:
        if vocab_size is not None and vocab_size > model.config.vocab_size:
            # The sampler would read past the logits' columns on every step.
            raise ValueError(
                f"vocab_size ({vocab_size}) is larger than the model's vocabulary "
                f"({model.config.vocab_size})"
            )
        self.model = model
        self.eos_token_ids = set(eos_token_ids)
        self.cache = model.new_cache(num_blocks, block_size)
        self.blocks = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(
            self.blocks, max_num_seqs, max_num_batched_tokens, self.cache.copy_block
        )
        self.block_size = block_size
        self.max_model_len = min(
            max_model_len or model.config.max_position_embeddings,
            model.config.max_position_embeddings,
        )
        self.sampler = Sampler(vocab_size)
        self.runner = ModelRunner(model, self.cache, block_size, self.sampler)
        self.vocab_size = vocab_size or model.config.vocab_size
        self.tokenizer = tokenizer
        self._requests: dict[str, Sequence] = {}  # by id, the first sequence of each
        self._finished: list[RequestOutput] = []
        self.num_draft_tokens = 0  # prompt-lookup drafts verified so far
        self.num_accepted_tokens = 0  # of which the model accepted
        self._ids = itertools.count()

    @property
    def waiting(self):
        return self.scheduler.waiting

    @property
    def running(self):
        return self.scheduler.running

    @property
    def num_requests(self) -> int:
        """Requests added and not yet collected by pop_finished (or aborted)."""
        return len(self._requests)

    def add_request(
        self,
        prompt_ids: Seq[int],
        params: SamplingParams,
        request_id: str | None = None,
        prompt: str | None = None,
    ) -> str:
        """Queue a request; returns its id. `prompt` (the prompt's text) is only carried
        into the request's output.

        Raises:
            InvalidRequest: what check_request raises, or a duplicate request id.
        """
        prompt_ids = [int(t) for t in prompt_ids]
        self.check_request(prompt_ids, params)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self._requests:
            raise InvalidRequest(f"request id {rid!r} is already in use")
        seq = Sequence(rid, prompt_ids, params, make_generator(params.seed), prompt=prompt)
        seq.text = self._text(prompt_ids, params)
        self._requests[rid] = seq
        self.scheduler.add(seq)
        return rid

    def check_request(self, prompt_ids: Seq[int], params: SamplingParams) -> None:
        """What add_request refuses, checked without queueing anything: callers that must
        answer before the request starts (a server's streamed response) call it first.
        It reads only fixed properties of the engine, so any thread may call it.

        Raises:
            InvalidRequest: an empty prompt, token ids outside the vocabulary, prompt +
                max_tokens beyond max_model_len (code "context_length_exceeded"), a
                request the cache can never hold, sampling parameters naming tokens
                outside the vocabulary, or stop strings without a tokenizer.
        """
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        vocab = self.model.config.vocab_size
        bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"prompt token id {bad} is outside the vocabulary [0, {vocab})", param="prompt"
            )
        limit, n_prompt = self.max_model_len, len(prompt_ids)
        total = n_prompt + params.max_tokens
        if total > limit:
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {total} tokens ({n_prompt} in the prompt, {params.max_tokens} "
                "for the completion). Please reduce the length of the prompt or the "
                "completion.",
                param="max_tokens" if n_prompt < limit else "prompt",
                code="context_length_exceeded",
            )
        # n sequences share the prompt's full blocks, then each grows its own.
        blocks = -(-total // self.block_size)
        shared = n_prompt // self.block_size
        if blocks + (params.n - 1) * (blocks - shared) > self.blocks.num_blocks:
            raise InvalidRequest(
                f"{params.n} x {total} tokens need more KV-cache blocks than the cache holds "
                f"({self.blocks.num_blocks} of {self.block_size} tokens)",
                param="n" if params.n > 1 else "max_tokens",
            )
        params.check_vocab(self.vocab_size)
        if params.stop and self.tokenizer is None:
            raise InvalidRequest("stop strings need an engine with a tokenizer", param="stop")

    def abort(self, request_id: str) -> None:
        """Drop a request (all its sequences) and free its blocks; it yields no output."""
        seq = self._requests.pop(request_id, None)
        if seq is None:
            return
        for s in seq.sequences:
            if not s.finished:
                self.scheduler.remove(s)
                s.status, s.finish_reason = SequenceStatus.FINISHED, "abort"

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def pop_finished(self) -> list[RequestOutput]:
        """The requests finished since the last call, in the order they finished."""
        done, self._finished = self._finished, []
        return done

    def step(self) -> list[StepOutput]:
        """Run one forward over the scheduled sequences; returns per-sequence progress."""
        decodes = [s for s in self.scheduler.running if s.num_tokens - s.num_computed_tokens == 1]
        drafting.propose_drafts(decodes, self.vocab_size)
        scheduled = self.scheduler.schedule()
        drafts = {id(s.seq): s.num_drafts for s in scheduled}
        for seq in decodes:  # keep what the scheduler made room for (none if preempted)
            seq.draft_ids = seq.draft_ids[: drafts.get(id(seq), 0)]
        if not scheduled:
            if self.scheduler.waiting and not self.scheduler.running:
                raise RuntimeError("the KV cache cannot hold the next waiting request")
            return []
        logits, first_row = self.runner.run(scheduled)
        outputs: list[StepOutput] = []
        to_sample: list[tuple[Sequence, int]] = []
        for s, row in zip(scheduled, first_row, strict=True):
            seq = s.seq
            if seq.draft_ids:
                outputs.append(self._verify(seq, logits[row : row + s.num_new_tokens]))
                continue
            start = seq.num_computed_tokens
            seq.num_computed_tokens += s.num_new_tokens
            self._cache_full_blocks(seq)
            if seq.params.prompt_logprobs is not None:
                seq.prompt_logprobs += self.runner.prompt_logprobs(
                    seq, start, s.num_new_tokens, logits, row
                )
            if seq.num_computed_tokens < seq.num_tokens:
                outputs.append(StepOutput(seq.request_id, seq.index, [], False, None))
                continue
            last = row + (s.num_new_tokens - 1 if wants_all_rows(seq, start) else 0)
            if not seq.forked and seq.index == 0 and not seq.output_ids:
                self._fork(seq)
                if seq.params.max_tokens == 0:
                    outputs += [self._apply(sib, [], None, "length") for sib in seq.sequences]
                    continue
                to_sample += [(sib, last) for sib in seq.sequences]
            else:
                to_sample.append((seq, last))
        if to_sample:
            outputs += self._sample(to_sample, logits)
        return outputs

    # -- internals -------------------------------------------------------------------

    def _text(self, prompt_ids: list[int], params: SamplingParams) -> TextStream | None:
        if self.tokenizer is None:
            return None
        return TextStream(self.tokenizer, prompt_ids, params.stop)

    def _cache_full_blocks(self, seq: Sequence) -> None:
        if seq.num_computed_tokens // self.block_size > len(seq.block_hashes):
            # A block just filled up: hash it (all_ids copies the whole sequence).
            self.blocks.cache_full_blocks(
                seq.block_table, seq.block_hashes, seq.all_ids, seq.num_computed_tokens
            )

    def _verify(self, seq: Sequence, logits: np.ndarray) -> StepOutput:
        verdict = drafting.verify(seq, logits, self.sampler, self.vocab_size)
        self.num_draft_tokens += verdict.num_drafts
        self.num_accepted_tokens += verdict.num_accepted
        drafting.rollback(seq, verdict, self.blocks)
        lps = verdict.logprobs if seq.params.logprobs is not None else None
        out = self._apply(seq, verdict.token_ids, lps)
        if not out.finished:
            self._cache_full_blocks(seq)
        return out

    def _fork(self, seq: Sequence) -> None:
        """Create the n - 1 siblings of a request whose prompt is now computed."""
        seq.forked = True
        for i in range(1, seq.params.n):
            table = [] if seq.params.max_tokens == 0 else self.blocks.fork(seq.block_table)
            sib = Sequence(
                seq.request_id,
                seq.prompt_ids,
                seq.params,
                make_generator(seq.params.seed, i),
                index=i,
                block_table=table,
                block_hashes=list(seq.block_hashes),
                num_computed_tokens=seq.num_computed_tokens,
                num_cached_tokens=seq.num_cached_tokens,
                status=SequenceStatus.RUNNING,
                forked=True,
                text=self._text(seq.prompt_ids, seq.params),
            )
            seq.siblings.append(sib)
            if seq.params.max_tokens:
                self.scheduler.running.append(sib)

    def _sample(self, seqs: list[tuple[Sequence, int]], logits: np.ndarray) -> list[StepOutput]:
        """One sampler call for the batch, then each sequence's bookkeeping."""
        out = self.runner.sample(seqs, logits)
        steps = []
        for i, (seq, row) in enumerate(seqs):
            if seq.lookup is not None:
                seq.lookup.last_logits = logits[row, : self.vocab_size]
            lp = None
            if seq.params.logprobs is not None:
                lp = [(out.logprobs[i], out.top_logprobs[i])]
            steps.append(self._apply(seq, [int(out.token_ids[i])], lp))
        return steps

    def _apply(
        self, seq: Sequence, tokens: list[int], lps: list | None, reason: str | None = None
    ) -> StepOutput:
        """Append `tokens` (with their logprobs) up to the first that ends the sequence,
        decide the finish reason, and describe the step.

        Note: the finish reason is decided here and only here: "stop" for EOS (unless
        ignore_eos), a stop token, or a stop string that the sequence's text found
        (the text is cut before it); "length" at max_tokens.
        """
        p = seq.params
        new: list[int] = []
        text = ""
        for token in tokens:
            seq.output_ids.append(token)
            new.append(token)
            if lps is not None:
                seq.logprobs.append(lps[len(new) - 1])
            if seq.text is not None:
                text += seq.text.add([token])
            if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
                reason = "stop"
            elif seq.text is not None and seq.text.stopped:
                reason = "stop"
            elif len(seq.output_ids) >= p.max_tokens:
                reason = "length"
            if reason:
                break
        if reason:
            if seq.text is not None:
                text += seq.text.finish()
            self._finish(seq, reason)
        new_lps = seq.logprobs[len(seq.logprobs) - len(new) :] if lps is not None else None
        return StepOutput(seq.request_id, seq.index, new, reason is not None, reason, new_lps, text)

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.scheduler.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        if seq.lookup is not None:
            seq.lookup.last_logits = None  # a view that would keep the step's logits alive
        first = self._requests.get(seq.request_id)
        if first is not None and all(s.finished for s in first.sequences):
            del self._requests[seq.request_id]
            self._finished.append(_request_output(first))


def _request_output(first: Sequence) -> RequestOutput:
    """The immutable output of a finished request (copies: nothing aliases the engine)."""
    outs = [
        CompletionOutput(
            s.index,
            s.text.text if s.text is not None else "",
            list(s.output_ids),
            s.finish_reason,
            list(s.logprobs) or None,
        )
        for s in first.sequences
    ]
    return RequestOutput(
        first.request_id,
        first.prompt,
        list(first.prompt_ids),
        outs,
        list(first.prompt_logprobs) if first.params.prompt_logprobs is not None else None,
        max(0, first.num_cached_tokens),
    )
