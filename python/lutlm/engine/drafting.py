"""Prompt-lookup decoding: draft tokens copied from the sequence itself, verified in
one forward pass, rolled back where the model disagrees. All of drafting lives here:
the engine calls `propose_drafts` before scheduling, `verify` on a drafting sequence's
logits rows and `rollback` on the blocks past what was accepted.

Models that rewrite their input (optimized IR, transpiled assembly, a decompiled
function with renamed variables) emit long spans that already occur in the prompt. The
drafter looks for the sequence's last n tokens earlier in the sequence (prompt and
output so far) and proposes the tokens that followed that occurrence. The engine runs
the drafts through the model in the same forward pass as the sequence's next token and
keeps the longest prefix the model agrees with, plus the model's own next token, so
the output is what decoding one token at a time gives (engine.py).

Which occurrence: copying walks forward through its source, so the drafter remembers
where its last accepted copy ended (`LookupState.source`) and prefers the first
occurrence whose continuation starts there or later; without one it takes the latest
occurrence. Longer n-grams are tried first: they are more specific. One or two tokens
match all over free text, so a shorter match counts only where it resumes a copy a few
tokens after it stopped (after a renamed identifier, a changed constant).

How many: a draft costs a row of every GEMM whether it is accepted or not, so each
sequence adapts its draft length to what the model accepted: it starts at one, doubles
after a draft accepted in full and falls to one more than the accepted count otherwise. When not one
draft is accepted, the sequence stops drafting for 1, 3, 7, 15 steps after 1, 2, 3, 4+
misses in a row: free text, where lookups rarely hit, then pays for a failed draft only
now and then. Nor does a sequence draft when the model was unsure of its latest token
(top probability below one half): it is choosing, not copying.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lutlm.engine.sampler import Sampler, draw

if TYPE_CHECKING:  # a Sequence holds a LookupState: only the annotations need it
    from lutlm.engine.block_manager import BlockManager
    from lutlm.engine.sequence import Sequence

MAX_NGRAM = 3  # longest suffix looked up
MIN_NGRAM = 1  # shortest
MAX_PAUSE_DOUBLINGS = 4  # the longest pause after misses is 2^4 - 1 steps
# Below this top probability at its latest token the model is choosing, not copying:
# a draft would likely be rejected.
MIN_CONFIDENCE = 0.5
# A match shorter than MAX_NGRAM is used only within this many tokens after where the
# last copy ended.
RESUME_REACH = 8


@dataclass(slots=True)
class LookupState:
    """One sequence's drafting state."""

    max_drafts: int  # SamplingParams.prompt_lookup
    draft_len: int  # drafts to propose next
    source: int = -1  # where the last accepted copy's continuation starts; -1: none
    proposed_source: int = -1  # where the pending drafts were copied from
    misses: int = 0  # verifications in a row that accepted nothing
    pause: int = 0  # steps left without drafting
    # The logits row that chose the latest token (a view, kept until the next step):
    # its top probability is computed only when there is a draft to weigh.
    last_logits: np.ndarray | None = None
    # The sequence's tokens as int64, grown as the output grows (no per-step copy of
    # the whole sequence); _n of them are filled in.
    _tokens: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    _n: int = 0

    @classmethod
    def new(cls, max_drafts: int) -> LookupState:
        # Start with one draft: a long first guess that fails costs several steps.
        return cls(max_drafts=max_drafts, draft_len=1)

    def tokens(self, prompt_ids: list[int], output_ids: list[int]) -> np.ndarray:
        """The sequence so far (prompt then output) as an int64 array; only the tokens
        appended since the last call are converted."""
        total = len(prompt_ids) + len(output_ids)
        if total > len(self._tokens):
            grown = np.empty(max(total, 2 * len(self._tokens), 64), np.int64)
            grown[: self._n] = self._tokens[: self._n]
            self._tokens = grown
        if self._n < len(prompt_ids):
            self._tokens[self._n : len(prompt_ids)] = prompt_ids[self._n :]
            self._n = len(prompt_ids)
        p = len(prompt_ids)
        self._tokens[self._n : total] = output_ids[self._n - p :]
        self._n = total
        return self._tokens[:total]

    def paused(self) -> bool:
        """Whether this step drafts nothing (after misses); counts the step if so."""
        if self.pause:
            self.pause -= 1
            return True
        return False

    def unsure(self) -> bool:
        """Whether the model was choosing rather than copying at its latest token (its
        top probability below MIN_CONFIDENCE): a draft would likely be rejected."""
        row = self.last_logits
        return row is not None and top_probability(row) < MIN_CONFIDENCE

    def update(self, num_drafts: int, num_accepted: int) -> None:
        """Adapt after a verification of num_drafts drafts, num_accepted accepted."""
        if num_drafts == 0:
            return
        if num_accepted == 0:
            self.misses += 1
            self.pause = (1 << min(self.misses, MAX_PAUSE_DOUBLINGS)) - 1
        else:
            self.misses = 0
        if num_accepted == num_drafts:
            self.draft_len = min(self.max_drafts, 2 * self.draft_len)
        else:
            self.draft_len = max(1, num_accepted + 1)
        # The model's own token follows the accepted drafts; the copy continues after it
        # when the model agreed with the source there too (checked at the next lookup).
        self.source = self.proposed_source + num_accepted + 1 if self.proposed_source >= 0 else -1


def top_probability(logits: np.ndarray) -> float:
    """The softmax probability of the most likely token of one row of logits."""
    return float(1.0 / np.exp(logits - logits.max()).sum())


def propose(tokens: np.ndarray, state: LookupState, limit: int) -> list[int]:
    """Up to min(state.draft_len, limit) draft tokens to follow `tokens`.

    Args:
        tokens: int64 [L], the sequence so far (prompt then output).
        state: the sequence's drafting state; records where the drafts came from.
        limit: the most drafts the caller can use (tokens left to generate, budget).

    Returns:
        The drafts, possibly none.
    """
    k = min(state.draft_len, limit)
    state.proposed_source = -1
    n_total = len(tokens)
    if k <= 0:
        return []
    for n in range(min(MAX_NGRAM, n_total - 1), MIN_NGRAM - 1, -1):
        # Occurrence at i covers tokens[i:i+n]; it needs a continuation (i + n < L) and
        # must not be the suffix itself, so i ranges over 0 .. L-n-1.
        span = n_total - n
        match = tokens[:span] == tokens[n_total - n]
        for j in range(1, n):
            match &= tokens[j : span + j] == tokens[n_total - n + j]
        starts = np.flatnonzero(match) + n  # continuation start of each occurrence
        if starts.size == 0:
            continue
        if state.source >= 0:
            ahead = starts[starts >= state.source]
            start = int(ahead[0]) if ahead.size else int(starts[-1])
        else:
            start = int(starts[-1])
        if n < MAX_NGRAM and (state.source < 0 or not 0 <= start - state.source <= RESUME_REACH):
            # Short n-grams match all over free text: trust them only to resume a copy.
            return []
        state.proposed_source = start
        return tokens[start : start + k].tolist()
    return []


def propose_drafts(decodes: Iterable[Sequence], vocab_size: int) -> None:
    """Set `draft_ids` of every drafting sequence among the next step's decodes (the
    scheduler then decides how many of them fit the token budget)."""
    for seq in decodes:
        seq.draft_ids = []
        lookup = seq.lookup
        if lookup is None or lookup.paused():
            continue
        # All drafts accepted plus the model's own token must fit in max_tokens.
        left = seq.params.max_tokens - len(seq.output_ids) - 1
        drafts = propose(lookup.tokens(seq.prompt_ids, seq.output_ids), lookup, left)
        if drafts and lookup.unsure():
            drafts = []
        # A padded model's prompt may hold ids the sampler never produces.
        bad = next((i for i, t in enumerate(drafts) if t >= vocab_size), len(drafts))
        seq.draft_ids = drafts[:bad]


@dataclass(slots=True)
class Verdict:
    """What the model made of a sequence's drafts."""

    token_ids: list[int]  # the accepted drafts, then the model's own next token
    logprobs: list  # (logprob, top list) per token, when the request asked for them
    num_drafts: int
    num_accepted: int


def verify(seq: Sequence, logits: np.ndarray, sampler: Sampler, vocab_size: int) -> Verdict:
    """Keep the drafts the model agrees with, then the model's own next token.

    Note: logits [1 + m, V]: row i follows the last token and drafts[:i]. Greedy: draft
    i is accepted while it is row i's argmax, so the tokens are exactly those of
    one-token-at-a-time decoding. Sampling: draft i is accepted with probability
    p_i(draft) (the draft distribution is a point mass, so this is the speculative
    sampling rule min(1, p/q)), and a rejection draws from p_i with the draft removed,
    renormalized; either way each token has the distribution plain sampling gives it.
    """
    drafts, p = list(seq.draft_ids), seq.params
    seq.draft_ids = []
    m = len(drafts)
    prompts = histories = None
    if p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty:
        # Row i's penalties count the drafts before it as generated tokens.
        prompts = [seq.prompt_ids] * (m + 1)
        histories = [seq.output_ids + drafts[:i] for i in range(m + 1)]
    if p.greedy:
        out = sampler.sample(logits, [p] * (m + 1), prompts, histories, None)
        tokens = out.token_ids.tolist()
        accepted = next((i for i in range(m) if tokens[i] != drafts[i]), m)
        tokens = tokens[: accepted + 1]
        lps = list(zip(out.logprobs, out.top_logprobs, strict=True))
    else:
        probs = sampler.probs(logits, [p] * (m + 1), prompts, histories)
        tokens = []
        for i in range(m + 1):
            if i == m:  # every draft accepted: the bonus token from the last row
                tokens.append(draw(probs[i], seq.generator))
                break
            if seq.generator.random() < probs[i, drafts[i]]:
                tokens.append(drafts[i])
                continue
            probs[i, drafts[i]] = 0.0
            tokens.append(draw(probs[i], seq.generator))
            break
        accepted = len(tokens) - 1
        lps = []
        if p.logprobs is not None:
            lps = sampler.token_logprobs(logits[: len(tokens)], tokens, p.logprobs)
    lookup = seq.lookup
    assert lookup is not None
    lookup.update(m, accepted)
    lookup.last_logits = logits[accepted, :vocab_size]
    return Verdict(tokens, lps[: len(tokens)] if p.logprobs is not None else [], m, accepted)


def rollback(seq: Sequence, verdict: Verdict, blocks: BlockManager) -> None:
    """K/V are now computed for the last token and the accepted drafts; the slots written
    for rejected drafts lie past the new context length (never read, overwritten by the
    next step), and blocks past what the sequence will hold go back to the pool."""
    seq.num_computed_tokens += 1 + verdict.num_accepted
    kept = seq.num_tokens + verdict.num_accepted + 1  # the new tokens are appended later
    blocks.trim(seq.block_table, -(-kept // blocks.block_size))
