"""LLMEngine: requests in, tokens out, one `step()` at a time.

A step asks the scheduler (scheduler.py) which sequences run and how many tokens each,
lays their tokens end to end in one ForwardBatch (decodes and prefill chunks mixed),
runs the model once, then samples the sequences whose last token was computed and
checks their stop conditions. Requests for n > 1 sequences fork after their prompt:
the siblings share its KV blocks (copy-on-write) and sample from the same logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lutlm.engine.block_manager import BlockManager
from lutlm.engine.prompt_lookup import propose
from lutlm.engine.request import Request, RequestStatus
from lutlm.engine.sampler import Sampler, make_generator
from lutlm.engine.sampling_params import SamplingParams
from lutlm.engine.scheduler import ScheduledSeq, Scheduler
from lutlm.model import Decoder, ForwardBatch

# Stop strings are looked for in the text of the last few tokens only: a match must
# end in the newest token (an earlier one would have stopped an earlier step), and a
# token is at least one byte of text (four for a byte-fallback character).
_STOP_TAIL_TOKENS_PER_CHAR = 4


def _draw(probs: np.ndarray, gen: np.random.Generator) -> int:
    """A token drawn from probs (unnormalized), by inverse CDF of one uniform number."""
    cdf = np.cumsum(probs)
    return min(int(np.searchsorted(cdf, gen.random() * cdf[-1], side="right")), len(cdf) - 1)


@dataclass
class StepOutput:
    """What one step produced for one sequence."""

    request_id: str
    index: int  # which of the request's n sequences
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None
    # (logprob, [(id, logprob)...]) per new token when the request asked for logprobs.
    new_logprobs: list | None = None


class LLMEngine:
    """Runs requests on a Decoder with a paged KV cache.

    Args:
        model: the decoder.
        eos_token_ids: tokens that end a sequence (unless ignore_eos).
        num_blocks: KV-cache blocks (block_size tokens each).
        block_size: tokens per block.
        max_model_len: prompt + generated tokens allowed per request.
        max_num_seqs: sequences running at once.
        max_num_batched_tokens: tokens per step (decodes plus prefill chunks).
        vocab_size: the tokenizer's vocabulary when the model's is padded.
        detokenize: token ids -> text, for stop strings.
        enable_prefix_caching: reuse the KV blocks of earlier requests' prefixes.
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
        self.vocab_size = vocab_size or model.config.vocab_size
        self.detokenize = detokenize
        self.requests: dict[str, Request] = {}  # by id, until the caller pops them
        self.num_draft_tokens = 0  # prompt-lookup drafts verified so far
        self.num_accepted_tokens = 0  # of which the model accepted
        self._ids = itertools.count()

    @property
    def waiting(self):
        return self.scheduler.waiting

    @property
    def running(self):
        return self.scheduler.running

    def add_request(
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> str:
        """Queue a request; returns its id.

        Raises:
            ValueError: what check_request raises, or a duplicate request id.
        """
        prompt_ids = [int(t) for t in prompt_ids]
        self.check_request(prompt_ids, params)
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self.requests:
            raise ValueError(f"request id {rid!r} is already in use")
        req = Request(rid, prompt_ids, params, make_generator(params.seed))
        self.requests[rid] = req
        self.scheduler.add(req)
        return rid

    def check_request(self, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """What add_request refuses, checked without queueing anything: callers that must
        answer before the request starts (a server's streamed response) call it first.
        It reads only fixed properties of the engine, so any thread may call it.

        Raises:
            ValueError: an empty prompt, token ids outside the vocabulary, prompt +
                max_tokens beyond max_model_len, a request the cache can never hold, or
                sampling parameters naming tokens outside the vocabulary.
        """
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        bad = next((t for t in prompt_ids if not 0 <= t < self.model.config.vocab_size), None)
        if bad is not None:
            raise ValueError(
                f"prompt token id {bad} is outside the vocabulary [0, "
                f"{self.model.config.vocab_size})"
            )
        total = len(prompt_ids) + params.max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) = "
                f"{total} exceeds the model's context of {self.max_model_len} tokens"
            )
        # n sequences share the prompt's full blocks, then each grows its own.
        blocks = -(-total // self.block_size)
        shared = len(prompt_ids) // self.block_size
        if blocks + (params.n - 1) * (blocks - shared) > self.blocks.num_blocks:
            raise ValueError(
                f"{params.n} x {total} tokens need more KV-cache blocks than the cache holds "
                f"({self.blocks.num_blocks} of {self.block_size} tokens)"
            )
        params.check_vocab(self.vocab_size)

    def abort(self, request_id: str) -> None:
        """Drop a request (all its sequences) and free its blocks."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        for seq in req.sequences:
            if not seq.finished:
                self.scheduler.remove(seq)
                seq.status, seq.finish_reason = RequestStatus.FINISHED, "abort"

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[StepOutput]:
        """Run one forward over the scheduled sequences; returns per-sequence progress."""
        self._propose_drafts()
        scheduled = self.scheduler.schedule()
        if not scheduled:
            if self.scheduler.waiting and not self.scheduler.running:
                raise RuntimeError("the KV cache cannot hold the next waiting request")
            return []
        batch, first_row = self._batch(scheduled)
        logits = self.model.forward(batch, self.cache)
        outputs: list[StepOutput] = []
        to_sample: list[tuple[Request, int]] = []
        for s, row in zip(scheduled, first_row, strict=True):
            req = s.req
            if req.draft_ids:
                outputs += self._verify(req, logits[row : row + s.num_new_tokens])
                continue
            start = req.num_computed_tokens
            req.num_computed_tokens += s.num_new_tokens
            self._cache_full_blocks(req)
            if req.params.prompt_logprobs is not None:
                self._prompt_logprobs(req, start, s.num_new_tokens, logits, row)
            if req.num_computed_tokens < req.num_tokens:
                outputs.append(StepOutput(req.request_id, req.index, [], False, None))
                continue
            last = row + (s.num_new_tokens - 1 if self._wants_all_rows(req, start) else 0)
            if not req.forked and req.index == 0 and not req.output_ids:
                self._fork(req)
                if req.params.max_tokens == 0:
                    for seq in req.sequences:
                        self._finish(seq, "length")
                        outputs.append(StepOutput(req.request_id, seq.index, [], True, "length"))
                    continue
                to_sample += [(seq, last) for seq in req.sequences]
            else:
                to_sample.append((req, last))
        if to_sample:
            outputs += self._sample(to_sample, logits)
        return outputs

    # -- internals -------------------------------------------------------------------

    def _cache_full_blocks(self, req: Request) -> None:
        if req.num_computed_tokens // self.block_size > len(req.block_hashes):
            # A block just filled up: hash it (all_ids copies the whole sequence).
            self.blocks.cache_full_blocks(
                req.block_table, req.block_hashes, req.all_ids, req.num_computed_tokens
            )

    def _propose_drafts(self) -> None:
        """Prompt-lookup drafts for the decodes of the next step (the scheduler may
        shorten them to fit the token budget)."""
        for req in self.scheduler.running:
            if req.lookup is None or req.num_tokens - req.num_computed_tokens != 1:
                continue
            if req.lookup.paused():
                req.draft_ids = []
                continue
            # All drafts accepted plus the model's own token must fit in max_tokens.
            left = req.params.max_tokens - len(req.output_ids) - 1
            drafts = propose(req.lookup.tokens(req.prompt_ids, req.output_ids), req.lookup, left)
            if drafts and req.lookup.unsure():
                drafts = []
            # A padded model's prompt may hold ids the sampler never produces.
            bad = next((i for i, t in enumerate(drafts) if t >= self.vocab_size), len(drafts))
            req.draft_ids = drafts[:bad]

    def _verify(self, req: Request, logits: np.ndarray) -> list[StepOutput]:
        """Keep the drafts the model agrees with, then the model's own next token.

        logits [1 + m, V]: row i follows the last token and drafts[:i]. Greedy: draft i
        is accepted while it is row i's argmax, so the tokens are exactly those of
        one-token-at-a-time decoding. Sampling: draft i is accepted with probability
        p_i(draft) (the draft distribution is a point mass, so this is the speculative
        sampling rule min(1, p/q)), and a rejection draws from p_i with the draft
        removed, renormalized; either way each token has the distribution plain
        sampling gives it. KV slots written for rejected drafts are beyond the new
        context length: never read, overwritten by the next step.
        """
        drafts, p = list(req.draft_ids), req.params
        req.draft_ids.clear()
        m = len(drafts)
        prompts = histories = None
        if p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty:
            # Row i's penalties count the drafts before it as generated tokens.
            prompts = [req.prompt_ids] * (m + 1)
            histories = [req.output_ids + drafts[:i] for i in range(m + 1)]
        if p.greedy:
            out = self.sampler.sample(logits, [p] * (m + 1), prompts, histories, None)
            tokens = out.token_ids.tolist()
            accepted = next((i for i in range(m) if tokens[i] != drafts[i]), m)
            tokens = tokens[: accepted + 1]
            lps = list(zip(out.logprobs, out.top_logprobs, strict=True))
        else:
            probs = self.sampler.probs(logits, [p] * (m + 1), prompts, histories)
            tokens = []
            for i in range(m + 1):
                if i == m:  # every draft accepted: the bonus token from the last row
                    tokens.append(int(_draw(probs[i], req.generator)))
                    break
                if req.generator.random() < probs[i, drafts[i]]:
                    tokens.append(drafts[i])
                    continue
                probs[i, drafts[i]] = 0.0
                tokens.append(int(_draw(probs[i], req.generator)))
                break
            accepted = len(tokens) - 1
            lps = []
            if p.logprobs is not None:
                lps = self.sampler.token_logprobs(logits[: len(tokens)], tokens, p.logprobs)
        self.num_draft_tokens += m
        self.num_accepted_tokens += accepted
        req.lookup.update(m, accepted)  # type: ignore[union-attr]
        req.lookup.last_logits = logits[accepted, : self.vocab_size]  # type: ignore[union-attr]
        # K/V are now computed for the last token and the accepted drafts.
        req.num_computed_tokens += 1 + accepted
        self.blocks.trim(req.block_table, -(-(req.num_tokens + accepted + 1) // self.block_size))
        new: list[int] = []
        new_lps: list | None = [] if p.logprobs is not None else None
        reason = None
        for i, token in enumerate(tokens):
            lp = [lps[i]] if new_lps is not None else None
            if lp is not None:
                req.logprobs += lp
                new_lps += lp  # type: ignore[operator]
            new.append(token)
            reason = self._append_token(req, token)
            if reason:
                break
        if reason:
            self._finish(req, reason)
        else:
            self._cache_full_blocks(req)
        return [StepOutput(req.request_id, req.index, new, reason is not None, reason, new_lps)]

    def _wants_all_rows(self, req: Request, start: int) -> bool:
        """Whether this chunk's every position has a logits row (prompt logprobs)."""
        return req.params.prompt_logprobs is not None and start < len(req.prompt_ids)

    def _batch(self, scheduled: list[ScheduledSeq]) -> tuple[ForwardBatch, list[int]]:
        """The flat batch, and for each scheduled sequence its first logits row."""
        bs = self.block_size
        tokens, positions, slots, rows, first_row = [], [], [], [], []
        cu = [0]
        width = max(len(s.req.block_table) for s in scheduled)
        tables = np.zeros((len(scheduled), width), np.int32)
        for i, s in enumerate(scheduled):
            req, n = s.req, s.num_new_tokens
            c = req.num_computed_tokens
            p = len(req.prompt_ids)
            tokens += (
                req.prompt_ids[c : c + n] + req.output_ids[max(0, c - p) : max(0, c + n - p)]
                if c < p
                else req.output_ids[c - p : c - p + n - len(req.draft_ids)] + req.draft_ids
            )
            pos = np.arange(c, c + n, dtype=np.int64)
            table = np.asarray(req.block_table, np.int32)
            tables[i, : len(table)] = table
            positions.append(pos)
            slots.append(table[pos // bs] * bs + pos % bs)
            first_row.append(len(rows))
            if self._wants_all_rows(req, c) or req.draft_ids:
                rows += range(cu[-1], cu[-1] + n)
            elif c + n == req.num_tokens:
                rows.append(cu[-1] + n - 1)
            cu.append(cu[-1] + n)
        positions_a = np.concatenate(positions)
        batch = ForwardBatch(
            token_ids=np.asarray(tokens, np.int64),
            positions=positions_a,
            slot_mapping=np.concatenate(slots).astype(np.int32),
            block_tables=tables,
            context_lens=np.array(
                [s.req.num_computed_tokens + s.num_new_tokens for s in scheduled], np.int32
            ),
            cu_seqlens_q=np.asarray(cu, np.int32),
            logits_indices=np.asarray(rows, np.int64),
        )
        return batch, first_row

    def _prompt_logprobs(
        self, req: Request, start: int, n: int, logits: np.ndarray, row: int
    ) -> None:
        """Record logprobs of prompt tokens predicted by positions start..start+n-1
        (entry j is prompt token j + 1's; a recompute skips those already recorded)."""
        if start >= len(req.prompt_ids):
            return
        want = [
            (row + i, p + 1)
            for i, p in enumerate(range(start, start + n))
            if p + 1 < len(req.prompt_ids) and p >= len(req.prompt_logprobs)
        ]
        if want:
            req.prompt_logprobs += self.sampler.token_logprobs(
                logits[[r for r, _ in want]],
                [req.prompt_ids[j] for _, j in want],
                req.params.prompt_logprobs,
            )

    def _fork(self, req: Request) -> None:
        """Create the n - 1 siblings of a request whose prompt is now computed."""
        req.forked = True
        for i in range(1, req.params.n):
            table = [] if req.params.max_tokens == 0 else self.blocks.fork(req.block_table)
            sib = Request(
                req.request_id,
                req.prompt_ids,
                req.params,
                make_generator(req.params.seed, i),
                index=i,
                block_table=table,
                block_hashes=list(req.block_hashes),
                num_computed_tokens=req.num_computed_tokens,
                num_cached_tokens=req.num_cached_tokens,
                status=RequestStatus.RUNNING,
                forked=True,
            )
            req.siblings.append(sib)
            if req.params.max_tokens:
                self.scheduler.running.append(sib)

    def _sample(self, seqs: list[tuple[Request, int]], logits: np.ndarray) -> list[StepOutput]:
        """One sampler call for the batch, then each sequence's bookkeeping."""
        reqs = [r for r, _ in seqs]
        out = self.sampler.sample(
            logits[[row for _, row in seqs]],
            [r.params for r in reqs],
            [r.prompt_ids for r in reqs],
            [r.output_ids for r in reqs],
            [r.generator for r in reqs],
        )
        steps = []
        for i, r in enumerate(reqs):
            if r.lookup is not None:
                r.lookup.last_logits = logits[seqs[i][1], : self.vocab_size]
            lp = None
            if r.params.logprobs is not None:
                lp = [(out.logprobs[i], out.top_logprobs[i])]
                r.logprobs += lp
            steps.append(self._append(r, int(out.token_ids[i]), lp))
        return steps

    def _append(self, req: Request, token: int, lp: list | None) -> StepOutput:
        reason = self._append_token(req, token)
        if reason:
            self._finish(req, reason)
        return StepOutput(req.request_id, req.index, [token], reason is not None, reason, lp)

    def _append_token(self, req: Request, token: int) -> str | None:
        """Append one output token; returns why the sequence stops there, if it does."""
        p = req.params
        req.output_ids.append(token)
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return "stop"
        if p.stop and self.detokenize and self._hits_stop_string(req):
            return "stop"
        if len(req.output_ids) >= p.max_tokens:
            return "length"
        return None

    def _hits_stop_string(self, req: Request) -> bool:
        longest = max(len(s) for s in req.params.stop)
        tail = req.output_ids[-_STOP_TAIL_TOKENS_PER_CHAR * longest :]
        text = self.detokenize(tail)  # type: ignore[misc]
        return any(s in text for s in req.params.stop)

    def _finish(self, req: Request, reason: str) -> None:
        self.scheduler.remove(req)
        req.status = RequestStatus.FINISHED
        req.finish_reason = reason
        if req.lookup is not None:
            req.lookup.last_logits = None  # a view that would keep the step's logits alive
