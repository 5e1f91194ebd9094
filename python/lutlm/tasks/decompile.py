"""decompile: C source for one function of a binary (or for assembly text), from an
LLM4Decompile model, recompiled with gcc, linked with the user's tests and run.

From a binary, the function's disassembly is taken the way LLM4Decompile's training data
was made: `objdump -d` of the function, with addresses, hex bytes and comments removed
(lutlm.tasks.disasm.objdump_function).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

TASK = "decompile"


def function_assembly(binary: str | Path, function: str, *, syntax: str = "att") -> str:
    """The cleaned objdump listing of `function` in `binary` (ValueError when the binary
    or the function is missing)."""
    from lutlm.tasks.disasm import objdump_function
    from lutlm.tasks.toolchain import MissingTool

    path = Path(binary)
    if not path.is_file():
        raise ValueError(f"{path}: no such binary")
    try:
        return objdump_function(path, function, syntax=syntax)
    except MissingTool as e:  # no listing, no prompt: an input error, not a verdict
        raise ValueError(f"cannot disassemble {path}: {e}") from e


def decompile(
    llm: Generator,
    *,
    binary: str | Path | None = None,
    function: str | None = None,
    asm: str | None = None,
    tests: Sequence[str | Path] = (),
    preset: str | Preset = "llm4decompile",
    n: int = 1,
    params: SamplingParams | None = None,
    timeout: float = 10.0,
) -> TaskResult:
    """Decompile a function and check the C with the user's tests.

    Args:
        llm: a lutlm.LLM (or anything with its generate/chat API).
        binary, function: an executable or object file and the function to decompile...
        asm: ...or its assembly text (used as given, stripped).
        tests: C driver files that call the function; each main returns 0 on success.
            Without tests the C is only compiled, and the verdict is "unverified".
        preset: a decompile preset name or Preset.
        n: answers sampled (best-of-n: the first that passes the tests wins).
        params: sampling parameters (default: the preset's).
        timeout: seconds per compile and per test run.

    Returns:
        TaskResult; answer is the C source.
    """
    from lutlm.tasks.verify_c import verify_c_function

    p = preset if isinstance(preset, Preset) else get_preset(preset, TASK)
    check_inputs(tests=list(tests))
    if (asm is None) == (binary is None):
        raise ValueError("give either a binary (with function) or assembly text")
    if binary is not None:
        if not function:
            raise ValueError("decompiling a binary needs the function's name")
        asm = function_assembly(binary, function, syntax=p.input_syntax or "att")
    assert asm is not None
    if not asm.strip():
        raise ValueError("the assembly input is empty")
    asm = asm.strip()
    gen = generate(llm, p, sampling(p, params, n), prompt=p.prompt(asm=asm))
    attempts = []
    for text in gen.texts:
        found = extract(p, text)
        if found.answer is None:
            verdict = no_answer(p, "C source")
        else:
            verdict = verify_c_function(found.answer, list(tests), timeout=timeout)
        attempts.append(Attempt(text, found.answer, verdict, found.fields))
        if verdict.ok:
            break  # the tests pass: later samples cannot do better
    chosen = _choose(attempts)
    return task_result(TASK, p, chosen, attempts, gen, asm)


def _choose(attempts: list[Attempt]) -> Attempt:
    """Verified first, then unverified (it compiled, no tests), then the first failure."""
    for status in ("verified", "unverified"):
        for a in attempts:
            if a.verification.status == status:
                return a
    return attempts[0]
