"""transpile: x86-64 assembly to aarch64 / armv5 / riscv64 with a CRT or GG model (or
to faster x86-64 with a superoptimizer), checked by running the user's tests.

The input is converted to the syntax the preset's model was trained on (CRT reads Intel
syntax, GG and the superoptimizer AT&T); the original input is the reference the tests
run against natively. The candidate is assembled with the target's cross gcc and the tests
run under qemu-user (lutlm.tasks.verify_asm); x86-64 candidates (superopt) run
natively.
"""

from __future__ import annotations

import re
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
from lutlm.tasks.report import Verification

TASK = "transpile"
TARGETS = ("aarch64", "armv5", "riscv64", "x86_64")

_INTEL = re.compile(r"^\s*\.intel_syntax\b", re.M)


def assembly_syntax(asm: str) -> str:
    """ "intel" when the assembly switches to Intel syntax (`.intel_syntax`), else "att"
    (what gcc and clang write by default)."""
    return "intel" if _INTEL.search(asm) else "att"


def to_syntax(asm: str, syntax: str) -> str:
    """`asm` in AT&T ("att") or Intel ("intel") syntax, converted by the assembler
    round trip of lutlm.tasks.disasm when it is in the other one."""
    if syntax not in ("att", "intel"):
        raise ValueError(f"unknown assembly syntax {syntax!r}; use 'att' or 'intel'")
    if assembly_syntax(asm) == syntax:
        return asm
    from lutlm.tasks import disasm
    from lutlm.tasks.toolchain import MissingTool

    try:
        return disasm.att_to_intel(asm) if syntax == "intel" else disasm.intel_to_att(asm)
    except MissingTool as e:  # the model needs the other syntax: an input error
        raise ValueError(f"cannot convert the assembly to {syntax} syntax: {e}") from e


def transpile(
    llm: Generator,
    asm: str,
    target: str,
    *,
    tests: str | Path | Sequence[str | Path] = (),
    preset: str | Preset = "crt",
    c_code: str | None = None,
    n: int = 1,
    params: SamplingParams | None = None,
    timeout: float = 10.0,
) -> TaskResult:
    """Transpile x86-64 assembly and check the result with the user's tests.

    Args:
        llm: a lutlm.LLM (or anything with its generate/chat API).
        asm: x86-64 assembly (a whole .s file, AT&T or Intel syntax).
        target: "aarch64", "armv5", "riscv64" (or "x86_64" for the superopt preset).
        tests: C drivers (a directory, files, or source texts) that call the assembly's
            functions and print results; without tests the verdict is "unverified".
        preset: a transpile preset name or Preset.
        c_code: the C source the assembly came from (the superopt prompt shows it).
        n: answers sampled (best-of-n: the first that passes the tests wins).
        params: sampling parameters (default: the preset's).
        timeout: seconds per test run.

    Returns:
        TaskResult; answer is the target assembly.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
    p = preset if isinstance(preset, Preset) else get_preset(preset, TASK)
    target_name = p.target_name(target)
    if not asm.strip():
        raise ValueError("the assembly input is empty")
    test_list = [tests] if isinstance(tests, (str, Path)) else list(tests)
    check_inputs(asm=asm, tests=test_list)
    values: dict[str, str] = {"target_name": target_name}
    if "c_code" in p.fields():
        if not c_code:
            raise ValueError(f"preset {p.name!r} shows the C source: pass c_code")
        values["c_code"] = c_code.strip("\n")
    model_input = to_syntax(asm, p.input_syntax or assembly_syntax(asm)).strip("\n")
    values["asm"] = model_input
    sp = sampling(p, params, n)
    if p.chat:
        gen = generate(llm, p, sp, messages=p.messages(**values))
    else:
        gen = generate(llm, p, sp, prompt=p.format(**values))
    attempts = []
    for text in gen.texts:
        found = extract(p, text)
        if found.answer is None:
            verdict = no_answer(p, "assembly")
        else:
            verdict = _verify(found.answer, target, test_list, asm, timeout)
        attempts.append(Attempt(text, found.answer, verdict, found.fields))
        if verdict.ok:
            break
    chosen = next((a for a in attempts if a.verification.ok), attempts[0])
    return task_result(TASK, p, chosen, attempts, gen, model_input)


def _verify(
    candidate: str, target: str, tests: list, reference: str, timeout: float
) -> Verification:
    from lutlm.tasks.verify_asm import verify_transpiled

    # x86_64 (superopt) candidates run natively next to the reference; others under qemu.
    return verify_transpiled(candidate, target, tests, reference_asm=reference, timeout=timeout)
