"""transpile: x86-64 assembly to aarch64 / armv5 / riscv64 with a CRT or GG model (or
to faster x86-64 with a superoptimizer), checked by running the user's tests.

The input is converted to the syntax the preset's model was trained on (CRT reads Intel
syntax, GG and the superoptimizer AT&T); the original input is the reference the tests
run against natively. The candidate is assembled with the target's cross gcc and the tests
run under qemu-user (lutlm.tasks.verify_asm); for x86-64 candidates both sides run
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
    extract,
    generate,
    no_answer,
    sampling,
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
    test_list = [tests] if isinstance(tests, (str, Path)) else list(tests)
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
    return TaskResult(
        task=TASK,
        preset=p.name,
        answer=chosen.answer,
        text=chosen.text,
        verification=chosen.verification,
        attempts=attempts,
        prompt=gen.prompt,
        prompt_token_ids=gen.prompt_token_ids,
        input=model_input,
    )


def _verify(
    candidate: str, target: str, tests: list, reference: str, timeout: float
) -> Verification:
    if target == "x86_64":
        return verify_native(candidate, tests, reference_asm=reference, timeout=timeout)
    from lutlm.tasks.verify_asm import verify_transpiled

    # Assemblers want a final newline; a model's answer is stripped of it.
    return verify_transpiled(
        candidate.rstrip("\n") + "\n", target, tests, reference_asm=reference, timeout=timeout
    )


def verify_native(
    candidate: str,
    tests: list,
    *,
    reference_asm: str,
    timeout: float = 10.0,
    compile_timeout: float = 60.0,
) -> Verification:
    """An x86-64 candidate (the superopt preset) against the x86-64 reference: each test
    driver linked with one and then the other, run natively, stdout and exit status
    compared. Statuses as in verify_asm.verify_transpiled."""
    from lutlm.tasks.toolchain import (
        MissingTool,
        find_tool,
        resolve_tests,
        run_tool,
        tail,
        trim_message,
        workdir,
    )

    found = resolve_tests(tests)
    details: dict = {"target": "x86_64", "tests": []}
    if not found:
        return Verification("unverified", "no tests given", details=details)
    if find_tool("gcc") is None:
        return Verification("unverified", str(MissingTool("gcc")), tool="gcc", details=details)
    with workdir() as d:
        for name, text in (("reference", reference_asm), ("candidate", candidate)):
            (d / f"{name}.s").write_text(text.rstrip("\n") + "\n", encoding="utf-8")
            res = run_tool(
                ["gcc", "-c", f"{name}.s", "-o", f"{name}.o"], cwd=d, timeout=compile_timeout
            )
            if not res.ok:
                msg = trim_message(res.stderr) or res.describe()
                if name == "reference":
                    details["reference_error"] = msg
                    return Verification(
                        "unverified",
                        f"the x86-64 reference assembly does not assemble:\n{msg}",
                        tool="gcc",
                        details=details,
                    )
                return Verification(
                    "failed", f"the candidate does not assemble:\n{msg}", "gcc", details
                )
        for i, (name, src) in enumerate(found):
            (d / f"t{i}.c").write_text(src, encoding="utf-8")
            entry: dict = {"name": name}
            details["tests"].append(entry)
            runs = {}
            for side in ("reference", "candidate"):
                build = run_tool(
                    ["gcc", "-O0", f"t{i}.c", f"{side}.o", "-o", f"t{i}_{side}"],
                    cwd=d,
                    timeout=compile_timeout,
                )
                if not build.ok:
                    msg = trim_message(build.stderr) or build.describe()
                    if side == "reference":
                        details["reference_error"] = f"{name}: {msg}"
                        return Verification(
                            "unverified",
                            f"test {name} does not build with the reference:\n{msg}",
                            "gcc",
                            details,
                        )
                    entry["status"] = "link failed"
                    return Verification(
                        "failed",
                        f"test {name} does not link with the candidate:\n{msg}",
                        "gcc",
                        details,
                    )
                runs[side] = run_tool([str(d / f"t{i}_{side}")], cwd=d, timeout=timeout)
            ref, cand = runs["reference"], runs["candidate"]
            entry.update(
                expected_stdout=tail(ref.stdout),
                stdout=tail(cand.stdout),
                expected_returncode=ref.returncode,
                returncode=cand.returncode,
                timed_out=cand.timed_out,
            )
            same = (ref.stdout, ref.returncode) == (cand.stdout, cand.returncode)
            entry["status"] = "passed" if same and not cand.timed_out else "differs"
            if entry["status"] != "passed":
                return Verification(
                    "failed",
                    f"test {name}: the candidate {cand.describe()} and printed "
                    f"{tail(cand.stdout, 200)!r}; the reference {ref.describe()} and printed "
                    f"{tail(ref.stdout, 200)!r}",
                    None,
                    details,
                )
    details["passed"] = details["total"] = len(found)
    return Verification(
        "verified", f"all {len(found)} tests behave as the reference", None, details
    )
