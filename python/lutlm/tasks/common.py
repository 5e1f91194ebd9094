"""What the three tasks share: the result they return, and generating with a preset.

A task takes a generator: `lutlm.LLM`, or anything with the same `generate(prompts,
params)` and `chat(messages, params)` methods returning `RequestOutput`s (the HTTP server
passes one that runs on its async engine; tests pass a scripted one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lutlm.engine.outputs import RequestOutput
from lutlm.engine.sampling_params import SamplingParams
from lutlm.tasks.presets import Extracted, Preset
from lutlm.tasks.report import Verification


class Generator(Protocol):
    """The part of `lutlm.LLM` a task uses."""

    def generate(self, prompts: Any, params: SamplingParams | None = None) -> list[RequestOutput]:
        """Complete raw prompts (encoded with the tokenizer's BOS)."""
        ...

    def chat(self, messages: Any, params: SamplingParams | None = None) -> list[RequestOutput]:
        """Answer a conversation through the model's chat template."""
        ...


@dataclass
class Attempt:
    """One model answer: its text, what was extracted and what the tools said."""

    text: str
    answer: str | None
    verification: Verification
    fields: dict[str, Any] = field(default_factory=dict)
    round: int = 0  # 0 for the first prompt, k for the k-th feedback retry

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "text": self.text,
            "answer": self.answer,
            "fields": self.fields,
            "verification": self.verification.to_dict(),
        }


@dataclass
class TaskResult:
    """A task's outcome: the chosen answer, the model's raw text, the verdict, every attempt.

    answer is what the verifier accepted or measured (a pass list, C source, assembly);
    None when no attempt held one. prompt is the first prompt's text, prompt_token_ids its
    tokens (what the model was really given).
    """

    task: str
    preset: str
    answer: str | None
    text: str
    verification: Verification
    attempts: list[Attempt]
    prompt: str
    prompt_token_ids: list[int] = field(default_factory=list)
    input: str = ""  # the preprocessed input the prompt was built from (IR, assembly)

    @property
    def ok(self) -> bool:
        return self.verification.ok

    @property
    def status(self) -> str:
        return self.verification.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "preset": self.preset,
            "status": self.verification.status,
            "answer": self.answer,
            "text": self.text,
            "verification": self.verification.to_dict(),
            "attempts": [a.to_dict() for a in self.attempts],
            "prompt": self.prompt,
            "prompt_tokens": len(self.prompt_token_ids),
            "input": self.input,
        }


def task_result(
    task: str,
    preset: Preset,
    chosen: Attempt,
    attempts: list[Attempt],
    first: Generation,
    input: str,
) -> TaskResult:
    """The TaskResult of a task whose chosen attempt and first generation are known."""
    return TaskResult(
        task=task,
        preset=preset.name,
        answer=chosen.answer,
        text=chosen.text,
        verification=chosen.verification,
        attempts=attempts,
        prompt=first.prompt,
        prompt_token_ids=first.prompt_token_ids,
        input=input,
    )


@dataclass
class Generation:
    """The texts of one prompt's n sequences, and the prompt as the model saw it."""

    prompt: str
    prompt_token_ids: list[int]
    texts: list[str]


def generate(
    llm: Generator,
    preset: Preset,
    params: SamplingParams,
    *,
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
) -> Generation:
    """Run one prompt (raw text, or a conversation for chat presets) with `params`."""
    if messages is not None:
        out = llm.chat(messages, params)[0]
    else:
        out = llm.generate([prompt], params)[0]
    return Generation(out.prompt, list(out.prompt_token_ids), [o.text for o in out.outputs])


def extract(preset: Preset, text: str) -> Extracted:
    """The preset's extractor; an extractor that raises counts as finding nothing."""
    try:
        return preset.extract(text)
    except Exception as e:  # a malformed answer must not crash the task
        return Extracted(None, {"extract_error": str(e)})


def no_answer(preset: Preset, what: str) -> Verification:
    return Verification(
        "failed",
        f"the answer holds no {what} (preset {preset.name!r} found nothing to check)",
    )


def sampling(preset: Preset, params: SamplingParams | None, n: int) -> SamplingParams:
    """The preset's defaults, or the caller's params, with n sequences.

    Best-of-n with greedy decoding would sample n copies of one answer, so when the caller
    gives no params and asks for n > 1, sampling runs at temperature 1 (plain sampling).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if params is None:
        return preset.sampling_params(n=n, temperature=1.0 if n > 1 else 0.0)
    if params.n == n:
        return params
    values = {f: getattr(params, f) for f in params.__dataclass_fields__}
    values["n"] = n
    return SamplingParams(**values)


def check_inputs(
    *, asm: str | None = None, ir: str | None = None, tests: Sequence[str | Path] = ()
) -> None:
    """Refuse, before any generation, user input that would make a verifier's tool read a
    file (lutlm.tasks.untrusted); a missing test file is a ValueError too."""
    from lutlm.tasks.toolchain import resolve_tests
    from lutlm.tasks.untrusted import check_source

    if asm is not None:
        check_source(asm, "asm", "the assembly input")
    if ir is not None:
        check_source(ir, "ir", "the IR input")
    for name, src in resolve_tests(list(tests)) if tests else ():
        check_source(src, "c", f"test {name}")
