"""Checking transpiled assembly (the transpile task) against the x86-64 original.

An assembly-to-assembly model's answer for aarch64, armv5 or riscv64 is checked by
behaviour, since two correct translations rarely look alike. Each test driver (a C
program with main() that calls the function(s) the assembly defines and prints results)
is built twice: natively with the x86-64 reference assembly, giving the expected output
and exit status, and with the target's cross gcc and the candidate assembly, run under
qemu-user. The answer is verified when every driver prints the same and exits the same
way. The cross build is static, so qemu needs no target libraries at run time (-L
sysroot is passed anyway, for toolchains whose static libc is missing). An x86-64
candidate (an optimizer's rewrite of the reference) is built with gcc and run natively.

Running a test runs the model's code; it happens in run_tool's sandbox (qemu-user itself
translates system calls, it does not confine them). Text that would make the assembler
read a file (lutlm.tasks.untrusted) fails the candidate, or is a ValueError for the
reference or a test driver.

Drivers should print with fixed-width types (int, int32_t): `long` is 64-bit on x86-64
and riscv64 but 32-bit on armv5.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from .report import Verification
from .toolchain import (
    MissingTool,
    ToolResult,
    find_tool,
    get_target,
    resolve_tests,
    run_tool,
    tail,
    workdir,
)
from .untrusted import UnsafeInput, check_source

__all__ = ["verify_transpiled"]

_DIFF_LINES = 20


def _diff(expected: ToolResult, actual: ToolResult) -> str:
    """A short unified diff of two runs' stdout plus their exit status when it differs."""
    lines = list(
        difflib.unified_diff(
            expected.stdout.splitlines(),
            actual.stdout.splitlines(),
            fromfile="x86-64 reference",
            tofile="candidate",
            lineterm="",
        )
    )
    if len(lines) > _DIFF_LINES:
        lines = lines[:_DIFF_LINES] + [f"[... {len(lines) - _DIFF_LINES} more diff lines]"]
    if expected.returncode != actual.returncode or expected.timed_out != actual.timed_out:
        lines.append(f"reference: {expected.describe()}; candidate: {actual.describe()}")
    return "\n".join(lines)


def verify_transpiled(
    asm: str,
    target: str,
    tests: str | Path | list[str | Path],
    *,
    reference_asm: str,
    timeout: float = 10,
    compile_timeout: float = 60,
    cflags: tuple[str, ...] = ("-O0",),
) -> Verification:
    """Run each test driver with the candidate `asm` (for `target`) under qemu-user and
    compare stdout and exit status with the same driver linked to `reference_asm` (x86-64,
    AT&T or, with its `.intel_syntax noprefix` directive, Intel) run natively.

    target: "aarch64", "armv5", "riscv64", or "x86_64" for an x86-64 candidate (an
    optimized rewrite of the reference), which runs natively; anything else is a
    ValueError listing the targets. tests: see toolchain.resolve_tests.

    "failed": the candidate does not assemble (the assembler's message), does not link
    with a driver (e.g. the function is missing), or a driver's output or exit status
    differs (a short diff), including a timeout under qemu. "verified": all drivers agree.
    "unverified": no tests; the host gcc, the cross gcc or qemu is missing (named in
    `tool`); or the reference side could not be built or run (a problem with the tests or
    the reference, not with the answer; details["reference_error"]).
    details: target, passed, total, tests: [{name, status, expected_stdout, stdout,
    expected_returncode, returncode, timed_out, diff}].
    """
    tgt = get_target(target)
    host = get_target("x86_64")
    found = resolve_tests(tests)
    check_source(reference_asm, "asm", "the reference assembly")
    for name, src in found:
        check_source(src, "c", f"test {name}")
    details: dict = {"target": target, "tests": []}
    try:
        check_source(asm, "asm", "the candidate")
    except UnsafeInput as e:
        return Verification("failed", str(e), details=details)
    if not found:
        return Verification("unverified", "no tests given", details=details)
    for tool in [host.compiler, *tgt.tools()]:
        if find_tool(tool) is None:
            e = MissingTool(tool)
            return Verification("unverified", str(e), tool=tool, details=details)

    results: list[dict] = details["tests"]
    try:
        with workdir() as d:
            # A model's answer usually arrives stripped of its final newline, which the
            # assembler wants.
            (d / "reference.s").write_text(reference_asm.rstrip("\n") + "\n", encoding="utf-8")
            (d / "candidate.s").write_text(asm.rstrip("\n") + "\n", encoding="utf-8")

            res = run_tool(
                [host.compiler, "-c", "reference.s", "-o", "reference.o"],
                cwd=d,
                timeout=compile_timeout,
            )
            if not res.ok:
                msg = res.error()
                details["reference_error"] = msg
                return Verification(
                    "unverified",
                    f"the x86-64 reference assembly does not assemble:\n{msg}",
                    tool=host.compiler,
                    details=details,
                )
            res = run_tool(
                [tgt.compiler, *tgt.cflags, "-c", "candidate.s", "-o", "candidate.o"],
                cwd=d,
                timeout=compile_timeout,
            )
            if not res.ok:
                msg = res.error()
                return Verification(
                    "failed",
                    f"the candidate does not assemble for {target}:\n{msg}",
                    tool=tgt.compiler,
                    details=details,
                )

            for i, (name, src) in enumerate(found):
                stem = f"t{i}_{re.sub(r'[^A-Za-z0-9_]', '_', Path(name).stem)}"
                driver = d / f"{stem}.c"
                driver.write_text(src, encoding="utf-8")
                entry: dict = {"name": name}
                results.append(entry)

                # Reference side: a failure here is the test's or the reference's fault.
                ref_exe = d / f"{stem}.x86_64"
                build = run_tool(
                    [host.compiler, *cflags, driver.name, "reference.o", "-o", ref_exe.name],
                    cwd=d,
                    timeout=compile_timeout,
                )
                if not build.ok:
                    msg = build.error()
                    details["reference_error"] = f"{name}: {msg}"
                    entry["status"] = "reference build failed"
                    return Verification(
                        "unverified",
                        f"test {name} does not build with the x86-64 reference:\n{msg}",
                        tool=host.compiler,
                        details=details,
                    )
                expected = run_tool(host.run_argv(ref_exe), cwd=d, timeout=timeout, untrusted=True)
                if expected.timed_out:
                    details["reference_error"] = f"{name}: reference run timed out"
                    entry["status"] = "reference timed out"
                    return Verification(
                        "unverified",
                        f"test {name} timed out after {timeout:g} s with the x86-64 reference",
                        details=details,
                    )
                entry["expected_stdout"] = tail(expected.stdout)
                entry["expected_returncode"] = expected.returncode

                # Candidate side: the driver alone must cross-compile (else the test is
                # not portable), then linking and running judge the candidate.
                obj = d / f"{stem}.{target}.o"
                build = run_tool(
                    [tgt.compiler, *tgt.cflags, *cflags, "-c", driver.name, "-o", obj.name],
                    cwd=d,
                    timeout=compile_timeout,
                )
                if not build.ok:
                    msg = build.error()
                    details["reference_error"] = f"{name}: {msg}"
                    entry["status"] = "driver does not cross-compile"
                    return Verification(
                        "unverified",
                        f"test {name} does not compile for {target}:\n{msg}",
                        tool=tgt.compiler,
                        details=details,
                    )
                exe = d / f"{stem}.{target}"
                link = run_tool(
                    [
                        tgt.compiler,
                        *tgt.cflags,
                        *tgt.link_flags,
                        obj.name,
                        "candidate.o",
                        "-o",
                        exe.name,
                    ],
                    cwd=d,
                    timeout=compile_timeout,
                )
                if not link.ok:
                    entry["status"] = "link failed"
                    entry["diff"] = link.error()
                    continue
                actual = run_tool(tgt.run_argv(exe), cwd=d, timeout=timeout, untrusted=True)
                entry.update(
                    stdout=tail(actual.stdout),
                    returncode=actual.returncode,
                    timed_out=actual.timed_out,
                )
                same = (
                    not actual.timed_out
                    and actual.stdout == expected.stdout
                    and actual.returncode == expected.returncode
                )
                if same:
                    entry["status"] = "passed"
                else:
                    entry["status"] = "timed out" if actual.timed_out else "output differs"
                    entry["diff"] = _diff(expected, actual)
                    if actual.stderr.strip():
                        entry["stderr"] = tail(actual.stderr)
    except MissingTool as e:
        return Verification("unverified", str(e), tool=e.tool, details=details)

    failed = [r for r in results if r["status"] != "passed"]
    details["total"] = len(results)
    details["passed"] = len(results) - len(failed)
    runner = tgt.qemu or tgt.compiler
    where = f"under {tgt.qemu}" if tgt.qemu else "natively"
    if not failed:
        return Verification(
            "verified",
            f"all {len(results)} tests agree with the x86-64 reference {where}",
            tool=runner,
            details=details,
        )
    first = failed[0]
    if first["status"] == "link failed":
        what = f"does not link with the candidate:\n{first['diff']}"
        tool = tgt.compiler
    elif first["status"] == "timed out":
        what = f"timed out after {timeout:g} s {where}"
        tool = runner
    else:
        what = f"differs from the x86-64 reference:\n{first['diff']}"
        tool = runner
    return Verification(
        "failed",
        f"{len(failed)} of {len(results)} tests failed; test {first['name']} {what}",
        tool=tool,
        details=details,
    )
