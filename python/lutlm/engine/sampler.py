"""Sampler: one token per sequence from a batch of logits.

Processing order for each row (a step whose parameter is off is skipped):

1. Vocab padding: columns at or beyond `vocab_size` are dropped, which is the same as
   setting them to -inf: they are never chosen and never appear in logprobs.
2. Logprobs, when requested, come from the float64 log_softmax of these *raw* logits:
   the model's own distribution, as vLLM returns by default, before any bias, penalty,
   temperature or truncation below. (OpenAI returns the distribution it sampled from.)
3. logit_bias: logits[id] += bias (values already clipped to [-100, 100]).
4. repetition_penalty (HF style), for every distinct token of prompt and output:
   logit / r where logit > 0, logit * r otherwise.
5. presence_penalty and frequency_penalty (OpenAI style), for output tokens only:
   logit -= count * frequency_penalty + presence_penalty.
6. temperature == 0: argmax of the processed logits (lowest id on ties); done.
7. Temperature: (logit - max) / T, in float64.
8. top_k: keep the tokens whose logit is at least the k-th largest.
9. Softmax; top_p: in descending order of probability (renormalized after top_k), keep
   the smallest prefix whose mass reaches top_p (within 1e-10, for rounding); the top
   token is always kept.
10. min_p: drop tokens whose probability is below min_p times the top token's.
11. Draw: one uniform number from the sequence's own Generator, inverse CDF over the
    kept tokens (probabilities renormalized).

Truncation is by value: a token tied with the last one kept by top_k or top_p is kept
too, so the result does not depend on how a sort orders ties.

Rows are processed one at a time (see `Sampler.sample`); truncation works on logits
and keeps only the surviving tokens, so after top_k the remaining steps cost O(k).

Reproducibility: each sequence carries its own np.random.Generator (`make_generator`)
and each sampled step draws exactly one number from it (greedy steps draw none), and
every operation treats rows independently. A seeded sequence therefore gets the same
tokens whatever the other sequences in the batch are and wherever it sits in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lutlm.engine.sampling_params import SamplingParams

# top_p sorts only the largest _TOP_P_CHUNK logits first (a partition is O(V), a full
# sort of a 152k vocab is not), widening 8x while they hold less than top_p mass.
_TOP_P_CHUNK = 512
# Tolerance on the top_p mass comparison, so that rounding cannot add one more token when
# the kept tokens' mass equals top_p (e.g. 0.5 + 0.3 against top_p = 0.8).
_TOP_P_EPS = 1e-10

TokenIds = Sequence[int] | npt.NDArray[np.integer]


@dataclass(slots=True)
class SamplerOutput:
    """What the sampler chose for a batch of B sequences."""

    token_ids: np.ndarray  # int64 [B]: the chosen token of each sequence
    # [B]: log-probability of the chosen token under the raw model distribution (see the
    # module docstring); None for sequences whose params.logprobs is None.
    logprobs: list[float | None]
    # [B]: the params.logprobs most likely (token id, logprob) pairs of the raw
    # distribution, most likely first (ties: lower id first); [] for logprobs=0, None for
    # sequences whose params.logprobs is None.
    top_logprobs: list[list[tuple[int, float]] | None]


def make_generator(seed: int | None, index: int = 0) -> np.random.Generator:
    """The random generator of one sequence.

    Args:
        seed: the request's seed (SamplingParams.seed). None draws fresh entropy from the
            operating system, so unseeded sequences never share a stream. Seeds are taken
            modulo 2**64.
        index: which of the request's n sequences this is. Each index gets an
            independent stream of the same seed; index 0 gives the same stream as
            np.random.default_rng(seed).

    Returns:
        A Generator that the caller keeps with the sequence for its whole life and
        passes to every Sampler.sample call for it.
    """
    if seed is None:
        return np.random.default_rng()
    if index < 0:
        raise ValueError(f"index must be at least 0, got {index}")
    spawn_key = (index,) if index else ()
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed % 2**64, spawn_key=spawn_key))
    )


class Sampler:
    """Chooses the next token of each sequence in a batch (see the module docstring).

    Stateless apart from vocab_size: the per-sequence state (token histories and random
    generators) is passed to each call.

    Args:
        vocab_size: the tokenizer's vocabulary size when the model's logits are wider
            (padded embedding); columns from vocab_size on are never chosen. None uses
            every column.
    """

    def __init__(self, vocab_size: int | None = None) -> None:
        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
        self.vocab_size = vocab_size

    def sample(
        self,
        logits: np.ndarray,
        params: Sequence[SamplingParams],
        prompt_token_ids: Sequence[TokenIds] | None = None,
        output_token_ids: Sequence[TokenIds] | None = None,
        generators: Sequence[np.random.Generator | None] | None = None,
    ) -> SamplerOutput:
        """Choose one token per row of logits.

        Note: rows are processed one at a time in one reused float64 buffer of the vocab
        size. Batch-wide float64 temporaries ([64, 152k] is 78 MB) cost more in page
        faults than all the arithmetic, and a row-local computation is what makes a
        seeded row independent of its batch.

        Args:
            logits: float [B, V'] of the last position of each sequence, V' >= vocab_size
                (float32 or float64). Not modified.
            params: B SamplingParams, one per row.
            prompt_token_ids: B token id sequences (list or array); read only for rows
                with repetition_penalty != 1. May be None if no row needs it.
            output_token_ids: B sequences of the tokens generated so far; read only for
                rows with a penalty. May be None if no row needs it.
            generators: B Generators from `make_generator`; each sampled row draws one
                number from its own. Greedy rows may hold None, and the whole argument
                may be None when every row is greedy. Rows may share a Generator (they
                draw from it in row order).

        Returns:
            SamplerOutput with the chosen int64 token ids [B] and, for rows that asked,
            logprobs of the raw distribution.

        Raises:
            ValueError: on mismatched shapes or lengths, a row of logits holding NaN or
                +inf (or only -inf), token ids out of range, or a sampled row without a
                Generator.
        """
        # Everything is validated before the first draw, so a refused batch leaves every
        # Generator untouched.
        x, penalties = self._checked_batch(logits, params, prompt_token_ids, output_token_ids)
        num_seqs, vocab = x.shape
        if generators is not None and len(generators) != num_seqs:
            raise ValueError(f"got {len(generators)} generators for {num_seqs} rows")
        for i, sp in enumerate(params):
            if not sp.greedy and (generators is None or generators[i] is None):
                raise ValueError(f"row {i} samples (temperature > 0) but has no generator")
        token_ids = np.zeros(num_seqs, np.int64)
        logprobs: list[float | None] = [None] * num_seqs
        top_logprobs: list[list[tuple[int, float]] | None] = [None] * num_seqs
        buf = np.empty(vocab, np.float64)
        for i, sp in enumerate(params):
            lse = 0.0
            if sp.logprobs is not None:
                np.copyto(buf, x[i])
                lse = _logsumexp(buf)
                top_logprobs[i] = [(t, lp - lse) for t, lp in _top(buf, sp.logprobs)]
            if sp.greedy and penalties[i] is None:
                token = int(np.argmax(x[i]))  # no copy needed: argmax of the raw row
            else:
                np.copyto(buf, x[i])
                if penalties[i] is not None:
                    penalties[i].apply(buf)  # type: ignore[union-attr]
                if sp.greedy:
                    token = int(np.argmax(buf))
                else:
                    gen = generators[i]  # type: ignore[index]
                    token = _draw(*_truncate(buf, sp), gen)  # type: ignore[arg-type]
            token_ids[i] = token
            if sp.logprobs is not None:
                logprobs[i] = float(x[i, token]) - lse
        return SamplerOutput(token_ids, logprobs, top_logprobs)

    def process_logits(
        self,
        logits: np.ndarray,
        params: Sequence[SamplingParams],
        prompt_token_ids: Sequence[TokenIds] | None = None,
        output_token_ids: Sequence[TokenIds] | None = None,
    ) -> np.ndarray:
        """Steps 1 and 3-5: the logits after padding removal, bias and penalties.

        Args:
            logits, params, prompt_token_ids, output_token_ids: as for `sample`.

        Returns:
            float64 [B, vocab_size] (a new array).
        """
        x, penalties = self._checked_batch(logits, params, prompt_token_ids, output_token_ids)
        out = x.astype(np.float64)
        for row, pen in zip(out, penalties, strict=True):
            if pen is not None:
                pen.apply(row)
        return out

    def probs(
        self,
        logits: np.ndarray,
        params: Sequence[SamplingParams],
        prompt_token_ids: Sequence[TokenIds] | None = None,
        output_token_ids: Sequence[TokenIds] | None = None,
    ) -> np.ndarray:
        """The distribution `sample` draws from (steps 1 and 3-10).

        Args:
            logits, params, prompt_token_ids, output_token_ids: as for `sample`.

        Returns:
            float64 [B, vocab_size], each row summing to 1; a greedy row is one-hot at
            its argmax.
        """
        out = self.process_logits(logits, params, prompt_token_ids, output_token_ids)
        for i, sp in enumerate(params):
            if sp.greedy:
                token = int(np.argmax(out[i]))
                out[i] = 0.0
                out[i, token] = 1.0
            else:
                ids, weights = _truncate(out[i], sp)
                out[i] = 0.0
                out[i, slice(None) if ids is None else ids] = weights / weights.sum()
        return out

    def token_logprobs(
        self, logits: np.ndarray, token_ids: Sequence[int], top: int
    ) -> list[tuple[float, list[tuple[int, float]]]]:
        """Logprob of given tokens under the raw distribution of each row (step 2), and
        the row's `top` most likely (id, logprob): the prompt logprobs of echo requests.

        Args:
            logits: float [B, V'] (V' >= vocab_size).
            token_ids: B token ids, one per row.
            top: how many top entries per row (0..20).
        """
        x, _ = self._checked_batch(logits, [SamplingParams()] * len(token_ids), None, None)
        out = []
        buf = np.empty(x.shape[1], np.float64)
        for row, token in zip(x, token_ids, strict=True):
            if not 0 <= token < x.shape[1]:
                raise ValueError(f"token id {token} is outside [0, {x.shape[1]})")
            np.copyto(buf, row)
            lse = _logsumexp(buf)
            out.append((float(buf[token]) - lse, [(t, v - lse) for t, v in _top(buf, top)]))
        return out

    def _checked_batch(
        self,
        logits: np.ndarray,
        params: Sequence[SamplingParams],
        prompt_token_ids: Sequence[TokenIds] | None,
        output_token_ids: Sequence[TokenIds] | None,
    ) -> tuple[np.ndarray, list[_Penalties | None]]:
        """Validate the batch.

        Returns:
            (x, penalties): a view of the logits without padding columns [B, vocab], and
            per row its prepared penalties, None where the row has none.
        """
        logits = np.asarray(logits)
        if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
            raise ValueError(
                f"logits must be a float array of shape [B, V], got {logits.dtype} {logits.shape}"
            )
        if len(params) != logits.shape[0]:
            raise ValueError(f"got {len(params)} SamplingParams for {logits.shape[0]} rows")
        vocab = logits.shape[1] if self.vocab_size is None else self.vocab_size
        if vocab > logits.shape[1] or vocab == 0:
            raise ValueError(f"logits have {logits.shape[1]} columns, vocab size is {vocab}")
        x = logits[:, :vocab]
        if x.size:
            # max is NaN if the row holds a NaN, so one reduction catches all three cases.
            bad = ~np.isfinite(x.max(axis=1))
            if bad.any():
                raise ValueError(
                    f"logits rows {np.flatnonzero(bad).tolist()} hold NaN or +inf, or only -inf"
                )
        penalties = [
            _Penalties.prepare(sp, i, vocab, prompt_token_ids, output_token_ids)
            for i, sp in enumerate(params)
        ]
        return x, penalties


@dataclass(slots=True)
class _Penalties:
    """One row's steps 3-5, with its token ids checked and counted."""

    params: SamplingParams
    bias_ids: np.ndarray | None  # int64 [n]: logit_bias keys
    seen_ids: np.ndarray | None  # int64: distinct tokens of prompt and output
    output_ids: np.ndarray | None  # int64: distinct output tokens
    output_counts: np.ndarray | None  # int64: how often each occurs

    @classmethod
    def prepare(
        cls,
        sp: SamplingParams,
        i: int,
        vocab: int,
        prompt_token_ids: Sequence[TokenIds] | None,
        output_token_ids: Sequence[TokenIds] | None,
    ) -> _Penalties | None:
        penalize_output = sp.presence_penalty != 0 or sp.frequency_penalty != 0
        if not sp.logit_bias and sp.repetition_penalty == 1 and not penalize_output:
            return None
        pen = cls(sp, None, None, None, None)
        if sp.logit_bias:
            pen.bias_ids = np.fromiter(sp.logit_bias.keys(), np.int64, len(sp.logit_bias))
            if pen.bias_ids.max() >= vocab:
                raise ValueError(
                    f"logit_bias token id {pen.bias_ids.max()} is out of range for vocab "
                    f"size {vocab}"
                )
        if sp.repetition_penalty != 1 or penalize_output:
            output = _history(output_token_ids, i, vocab, "output_token_ids")
            if sp.repetition_penalty != 1:
                prompt = _history(prompt_token_ids, i, vocab, "prompt_token_ids")
                pen.seen_ids = np.unique(np.concatenate([prompt, output]))
            if penalize_output:
                pen.output_ids, pen.output_counts = np.unique(output, return_counts=True)
        return pen

    def apply(self, row: np.ndarray) -> None:
        """Steps 3-5, in place on the row's float64 logits [vocab]."""
        sp = self.params
        if self.bias_ids is not None:
            row[self.bias_ids] += np.fromiter(sp.logit_bias.values(), np.float64)
        if self.seen_ids is not None:
            r = sp.repetition_penalty
            v = row[self.seen_ids]
            row[self.seen_ids] = np.where(v > 0, v / r, v * r)
        if self.output_ids is not None:
            row[self.output_ids] -= self.output_counts * sp.frequency_penalty + sp.presence_penalty


def _history(histories: Sequence[TokenIds] | None, row: int, vocab: int, name: str) -> np.ndarray:
    """One row's token ids as int64, checked against the vocab."""
    if histories is None:
        raise ValueError(f"{name} is needed for the penalties of row {row}")
    ids = np.asarray(histories[row], dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(f"{name}[{row}] holds token ids outside [0, {vocab})")
    return ids


def _logsumexp(row: np.ndarray) -> float:
    """log(sum(exp(row))) in float64 (row has a finite maximum)."""
    m = float(row.max())
    return m + float(np.log(np.exp(row - m).sum()))


def _top(row: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n largest entries of row as (id, value), largest first, lower id on ties."""
    n = min(n, row.shape[0])
    if n == 0:
        return []
    ids = np.argpartition(-row, n - 1)[:n]
    ids = ids[np.lexsort((ids, -row[ids]))]
    return [(int(t), float(row[t])) for t in ids]


def _truncate(z: np.ndarray, sp: SamplingParams) -> tuple[np.ndarray | None, np.ndarray]:
    """Steps 7-10 on one row's processed logits z [V] (overwritten).

    Note: truncation works on logits, where ordering equals probability ordering but
    nothing underflows to tied zeros (a partition over many ties is slow), and keeps
    the survivors in a compact array, so later steps cost O(kept), not O(V).

    Returns:
        (ids, weights): the kept token ids (int64, ascending) and their probabilities up
        to a common factor; ids is None when nothing was dropped and weights covers the
        whole vocab.
    """
    vocab = z.shape[0]
    # Subtracting the max first keeps tiny temperatures from overflowing to inf - inf;
    # afterwards the top logit is exactly 0.
    z -= z.max()
    z /= sp.temperature
    ids = None
    if 0 < sp.top_k < vocab:
        kth = np.partition(z, vocab - sp.top_k)[vocab - sp.top_k]
        ids = np.flatnonzero(z >= kth)
        z = z[ids]
    keep = None
    if sp.top_p < 1:
        lse = float(np.log(np.exp(z).sum()))  # normalizer after top_k
        keep = z >= _top_p_cutoff(z, lse, sp.top_p)
    if sp.min_p > 0:  # p >= min_p * p_max  <=>  z >= log(min_p), as max(z) == 0
        above = z >= np.log(sp.min_p)
        keep = above if keep is None else keep & above
    if keep is not None:
        kept = np.flatnonzero(keep)
        ids = kept if ids is None else ids[kept]
        z = z[kept]
    return ids, np.exp(z)


def draw(weights: np.ndarray, gen: np.random.Generator) -> int:
    """A token drawn from unnormalized `weights` [V] with one uniform number (the draw of
    step 11, for callers that build their own distribution: draft verification)."""
    return _draw(None, weights, gen)


def _draw(ids: np.ndarray | None, weights: np.ndarray, gen: np.random.Generator) -> int:
    """Inverse-CDF draw of one token from `_truncate`'s output, one uniform number."""
    cdf = np.cumsum(weights)
    k = int(np.searchsorted(cdf, gen.random() * cdf[-1], side="right"))
    # side="right" lands only where the cdf rises, i.e. on a positive weight. u < 1 keeps
    # u * total below total in IEEE arithmetic, so k never passes the end; be defensive.
    if k == weights.shape[0]:
        k = int(np.flatnonzero(weights)[-1])
    return k if ids is None else int(ids[k])


def _top_p_cutoff(z: np.ndarray, lse: float, top_p: float) -> float:
    """The smallest logit that top_p keeps (at most the top token's).

    Note: sorted descending, token m is the last one kept when the probability mass
    exp(z - lse) of tokens 0..m first reaches top_p. Only the largest k logits are
    sorted; k widens 8x until their mass reaches top_p, so a peaked distribution costs
    one O(V) partition instead of a full sort.
    """
    vocab = z.shape[0]
    target = top_p - _TOP_P_EPS
    k = min(vocab, _TOP_P_CHUNK)
    while True:
        top = np.partition(z, vocab - k)[vocab - k :] if k < vocab else z
        top = np.sort(top)[::-1]
        m = int(np.searchsorted(np.cumsum(np.exp(top - lse)), target, side="left"))
        if m < k:
            return float(top[m])
        if k == vocab:  # rounding kept the total below target: keep everything
            return -np.inf
        k = min(vocab, k * 8)
