"""A sequence being generated: its token ids, block table, text and progress.

The engine's per-request state; it never leaves the engine (callers get the immutable
outputs of engine/outputs.py). A request for n > 1 sequences is one Sequence (index 0)
until its prompt is computed; then it forks n - 1 siblings that share its prompt blocks
(engine.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from lutlm.engine.drafting import LookupState
from lutlm.engine.outputs import TextStream
from lutlm.engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    generator: np.random.Generator
    index: int = 0  # which of the request's n sequences
    output_ids: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # prefix-cache chain, full blocks
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    num_cached_tokens: int = -1  # prompt tokens found in the prefix cache (-1: not yet)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None  # "stop", "length" or "abort"
    logprobs: list = field(default_factory=list)  # per output token: (logprob, top list)
    prompt_logprobs: list = field(default_factory=list)  # per prompt token after the first
    siblings: list[Sequence] = field(default_factory=list)  # index 1..n-1, on index 0 only
    forked: bool = False
    lookup: LookupState | None = None  # prompt-lookup drafting, when params.prompt_lookup
    draft_ids: list[int] = field(default_factory=list)  # drafts to verify in this step
    text: TextStream | None = None  # the output's text (None when the engine has no tokenizer)
    prompt: str | None = None  # the prompt's text, when the caller gave it (for outputs)

    def __post_init__(self) -> None:
        if self.lookup is None and self.params.prompt_lookup:
            self.lookup = LookupState.new(self.params.prompt_lookup)

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def sequences(self) -> list[Sequence]:
        """This request's sequences in index order (itself first)."""
        return [self, *self.siblings]
