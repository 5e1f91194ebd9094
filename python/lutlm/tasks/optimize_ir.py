"""optimize-ir: ask an LLM Compiler model for a pass list that shrinks an LLVM-IR module,
apply it with the real `opt`, measure, and keep -Oz when the model's list does worse.

Two ways to spend more compute, both from the LLM Compiler line of work:

- best-of-n: sample n answers to the one prompt, verify each, keep the smallest object
  file. Grubisic et al. ("Compiler generated feedback for Large Language Models",
  arXiv:2403.14714) found plain sampling with 10 or more samples beats feedback.
- compiler feedback: when no answer verified (opt rejected the list) or the model's
  predicted counts were wrong, the tool's message goes back to the model as a new turn
  of the conversation and it answers again, up to max_retries times.
"""

from __future__ import annotations

from typing import Any

from lutlm.engine.sampling_params import SamplingParams
from lutlm.tasks.common import (
    Attempt,
    Generator,
    TaskResult,
    check_inputs,
    extract,
    generate,
    no_answer,
    sampling,
    task_result,
)
from lutlm.tasks.presets import Preset, get_preset
from lutlm.tasks.report import Verification

TASK = "optimize-ir"


def _verify(ir: str, attempt_text: str, preset: Preset, timeout: float, round_: int) -> Attempt:
    from lutlm.tasks import verify_ir  # the verifier imports its tools lazily too

    found = extract(preset, attempt_text)
    if found.answer is None:
        return Attempt(attempt_text, None, no_answer(preset, "pass list"), found.fields, round_)
    try:
        verdict = verify_ir.verify_pass_list(
            ir,
            found.answer,
            timeout=timeout,
            predicted_instructions=found.fields.get("predicted_instructions"),
            predicted_size=found.fields.get("predicted_size"),
        )
    except ValueError as e:  # a pass list the normalizer cannot read is the model's fault
        verdict = Verification("failed", str(e), None, {"passes": found.answer})
    return Attempt(attempt_text, found.answer, verdict, found.fields, round_)


def _size(a: Attempt) -> float:
    size = a.verification.details.get("object_size")
    return float(size) if isinstance(size, (int, float)) else float("inf")


def _best(attempts: list[Attempt]) -> Attempt:
    """The verified attempt with the smallest object file; else the first attempt that was
    not "unverified" (a tool's message is more useful than a missing tool), else the first."""
    verified = [a for a in attempts if a.verification.ok]
    if verified:
        return min(verified, key=_size)
    failed = [a for a in attempts if a.verification.status == "failed"]
    return (failed or attempts)[0]


def _mismatch(a: Attempt) -> str | None:
    """Words for a wrong prediction of the verified pass list's counts, or None."""
    d = a.verification.details
    parts = []
    for key, actual_key, what in (
        ("predicted_instructions", "instructions", "instruction count"),
        ("predicted_size", "object_size", "binary size"),
    ):
        predicted, actual = a.fields.get(key), d.get(actual_key)
        if predicted is not None and actual is not None and predicted != actual:
            parts.append(f"the {what} is {actual}, not {predicted}")
    return "; ".join(parts) or None


def feedback_message(a: Attempt) -> str | None:
    """What the compiler says back to the model about an attempt; None when nothing is wrong.

    Following Grubisic et al. (arXiv:2403.14714), the feedback names the error opt gave for
    an invalid list, or the instruction count and size the list really produces.
    """
    v = a.verification
    if v.status == "failed":
        if a.answer is None:
            return "The answer did not contain a pass list. Answer with the passes to run."
        return f"Running opt with these passes failed: {v.message.strip()}"
    if v.ok and (words := _mismatch(a)):
        return f"The predicted counts are wrong: {words}."
    return None


def _followup(preset: Preset, prompt: str, answer_text: str, feedback: str) -> str:
    """The conversation so far plus the feedback as a new [INST] turn, in the Llama 2 chat
    layout Code Llama (and so LLM Compiler) was trained on: `[INST] q [/INST] a </s><s>[INST]
    q2 [/INST]` (the tokenizer adds the first <s>)."""
    return (
        f"{prompt} {answer_text.strip()} </s><s>[INST] {feedback} Tell me how to optimize "
        "this LLVM-IR for object file size again. [/INST]"
    )


def optimize_ir(
    llm: Generator,
    ir: str,
    *,
    preset: str | Preset = "llm-compiler",
    n: int = 1,
    max_retries: int = 0,
    params: SamplingParams | None = None,
    timeout: float = 60.0,
) -> TaskResult:
    """Find a pass list for `ir` with the model, verified by opt / llc / llvm-size.

    Args:
        llm: a lutlm.LLM (or anything with its generate/chat API).
        ir: the LLVM-IR module (text).
        preset: an optimize-ir preset name or Preset.
        n: answers sampled per prompt (best-of-n); the smallest verified object file wins.
        max_retries: feedback rounds after a round with no verified answer or a wrong count
            prediction.
        params: sampling parameters (default: the preset's; temperature 1 when n > 1).
        timeout: seconds per tool run.

    Returns:
        TaskResult; answer is the chosen pass list, verification.details holds the sizes and
        counts of the model's list and of -Oz, "chosen" and the optimized IR.
    """
    p = preset if isinstance(preset, Preset) else get_preset(preset, TASK)
    if not ir.strip():
        raise ValueError("the LLVM-IR input is empty")
    check_inputs(ir=ir)
    if max_retries < 0:
        raise ValueError(f"max_retries must be at least 0, got {max_retries}")
    sp = sampling(p, params, n)
    prompt = p.prompt(ir=ir)
    first = None
    attempts: list[Attempt] = []
    for round_ in range(max_retries + 1):
        gen = generate(llm, p, sp, prompt=prompt)
        first = first or gen
        batch = [_verify(ir, text, p, timeout, round_) for text in gen.texts]
        attempts.extend(batch)
        best = _best(batch)
        feedback = feedback_message(best)
        if feedback is None or round_ == max_retries:
            break
        if best.verification.status == "unverified":  # a missing tool: no feedback to give
            break
        prompt = _followup(p, gen.prompt, best.text, feedback)
    chosen = _best(attempts)
    return task_result(TASK, p, chosen, attempts, first, ir)


def describe(result: TaskResult) -> dict[str, Any]:
    """The headline numbers of an optimize-ir result, for the CLI's summary line."""
    d = result.verification.details
    return {k: d.get(k) for k in ("chosen", "object_size", "oz_object_size", "instructions")}
