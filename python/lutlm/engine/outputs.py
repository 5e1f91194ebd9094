"""What the engine hands out: immutable outputs, and the text they carry.

Per step, a `StepOutput` per sequence that moved: its new token ids, the text they made
final, their logprobs and, once, the finish reason. When all of a request's sequences
are done, one `RequestOutput` with everything (texts, token ids, logprobs, prompt
logprobs, cached prompt tokens). The finish reason is decided once, in the engine, and
stop strings are cut once, by the sequence's `TextStream`; `LLM`, the server and the
task front ends only read these objects, never the engine's sequences.

`TextStream` turns a sequence's token ids into text as they arrive and ends the text
before the first stop string, holding back the few characters that might be the start
of one, so a streaming client never sees text that is later taken back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lutlm.tokenizer import Tokenizer

FinishReason = str  # "stop" (EOS, a stop token or a stop string), "length" or "abort"


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one step produced for one sequence."""

    request_id: str
    index: int  # which of the request's n sequences
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None
    # (logprob, [(id, logprob)...]) per new token when the request asked for logprobs.
    new_logprobs: list | None = None
    new_text: str = ""  # text made final by these tokens ("" without a tokenizer)


@dataclass(frozen=True, slots=True)
class CompletionOutput:
    """One finished sequence."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None
    logprobs: list | None = None  # per token: (logprob, [(id, logprob), ...])


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """A finished request: its n sequences in index order."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list | None = None  # per prompt token after the first
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def text(self) -> str:
        """The first sequence's text."""
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason


class TextStream:
    """A sequence's text, built incrementally, cut before the first stop string.

    Args:
        tokenizer: the model's tokenizer.
        prompt_ids: the prompt (left context for the first tokens' text).
        stop: stop strings.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], stop: Sequence[str] = ()):
        self._decoder = tokenizer.incremental_decoder(prompt_ids=prompt_ids)
        self._stop = list(stop)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.text = ""
        self.stopped = False  # a stop string was found; later tokens add nothing
        self._sent = 0
        self._searched = 0

    def add(self, ids: Iterable[int]) -> str:
        """Take new token ids; returns the text that is now final."""
        if self.stopped:
            return ""
        self.text += self._decoder.add(list(ids))
        return self._delta(final=False)

    def finish(self) -> str:
        """The rest of the text at the end of generation."""
        if not self.stopped:
            self.text += self._decoder.flush()
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        if self._stop and not self.stopped:
            start = max(0, self._searched - self._hold)
            cuts = [c for c in (self.text.find(s, start) for s in self._stop) if c >= 0]
            if cuts:
                self.text, self.stopped, final = self.text[: min(cuts)], True, True
            self._searched = len(self.text)
        end = len(self.text) if final else max(self._sent, len(self.text) - self._hold)
        delta, self._sent = self.text[self._sent : end], end
        return delta
