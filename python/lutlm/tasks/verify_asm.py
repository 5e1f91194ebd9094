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
from dataclasses import dataclass
from pathlib import Path

from .report import Verification, tally, tests_failed
from .targets import Target, get_target
from .toolchain import (
    MissingTool,
    ToolResult,
    driver_stem,
    missing_tool_verdict,
    resolve_tests,
    run_tool,
    screen_answer,
    tail,
    workdir,
)
from .untrusted import check_source

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
    details: dict = {"target": target, "tests": []}
    early = screen_answer(asm, "asm", found, [host.compiler, *tgt.tools()], details)
    if early is not None:
        return early

    try:
        with workdir() as d:
            ws = _Workspace(d, host, tgt, cflags, timeout, compile_timeout)
            early = _assemble(ws, asm, reference_asm, details)
            if early is not None:
                return early
            for i, (name, src) in enumerate(found):
                early = _check_driver(ws, i, name, src, details)
                if early is not None:
                    return early
    except MissingTool as e:
        return missing_tool_verdict(e, details)
    return _verdict(details["tests"], tgt, timeout, details)


@dataclass(frozen=True)
class _Workspace:
    """Where and how one verify_transpiled call builds and runs its programs."""

    d: Path  # the work directory: reference.o, candidate.o and every driver's files
    host: Target  # builds and runs the reference side, natively
    tgt: Target  # builds the candidate side and runs it (under its qemu, if any)
    cflags: tuple[str, ...]  # the drivers' compiler flags, on both sides
    timeout: float  # seconds for each test run
    compile_timeout: float  # seconds for each compiler, assembler or linker run

    def build(self, argv: list[str]) -> ToolResult:
        """Returns: the result of a compiler, assembler or linker run in the work directory."""
        return run_tool(argv, cwd=self.d, timeout=self.compile_timeout)

    def run(self, argv: list[str]) -> ToolResult:
        """Returns: the result of running a test program (untrusted: it holds model code)."""
        return run_tool(argv, cwd=self.d, timeout=self.timeout, untrusted=True)


def _assemble(ws: _Workspace, asm: str, reference_asm: str, details: dict) -> Verification | None:
    """Assemble the reference natively into reference.o, then the candidate for the
    target into candidate.o.

    Returns:
        "unverified" when the reference does not assemble (details["reference_error"]),
        "failed" when the candidate does not; None when both did.
    """
    # A model's answer usually arrives stripped of its final newline, which the
    # assembler wants.
    (ws.d / "reference.s").write_text(reference_asm.rstrip("\n") + "\n", encoding="utf-8")
    (ws.d / "candidate.s").write_text(asm.rstrip("\n") + "\n", encoding="utf-8")

    res = ws.build([ws.host.compiler, "-c", "reference.s", "-o", "reference.o"])
    if not res.ok:
        msg = res.error()
        details["reference_error"] = msg
        return Verification(
            "unverified",
            f"the x86-64 reference assembly does not assemble:\n{msg}",
            tool=ws.host.compiler,
            details=details,
        )
    tgt = ws.tgt
    res = ws.build([tgt.compiler, *tgt.cflags, "-c", "candidate.s", "-o", "candidate.o"])
    if not res.ok:
        msg = res.error()
        return Verification(
            "failed",
            f"the candidate does not assemble for {tgt.name}:\n{msg}",
            tool=tgt.compiler,
            details=details,
        )
    return None


def _check_driver(
    ws: _Workspace, i: int, name: str, src: str, details: dict
) -> Verification | None:
    """Run test driver `i` with the reference and with the candidate, recording its entry
    in details["tests"].

    Returns:
        The "unverified" verdict when the driver's reference side fails or it does not
        cross-compile (the test's fault, which ends the verification); None otherwise,
        whether the candidate passed or not.
    """
    stem = f"t{i}_{driver_stem(name)}"
    (ws.d / f"{stem}.c").write_text(src, encoding="utf-8")
    entry: dict = {"name": name}
    details["tests"].append(entry)

    expected = _run_reference(ws, name, stem, entry, details)
    if isinstance(expected, Verification):
        return expected
    early = _cross_compile_driver(ws, name, stem, entry, details)
    if early is not None:
        return early
    actual = _run_candidate(ws, stem, entry)
    if actual is not None:
        entry.update(_judge(expected, actual))
    return None


def _run_reference(
    ws: _Workspace, name: str, stem: str, entry: dict, details: dict
) -> ToolResult | Verification:
    """Link driver `stem`.c with reference.o and run it natively: the expected behaviour.

    A failure here is the test's or the reference's fault, not the candidate's.

    Returns:
        The reference run (its stdout tail and exit status also go in `entry`), or the
        "unverified" verdict when the driver does not build with the reference or its run
        times out (the reason in details["reference_error"] and entry["status"]).
    """
    host = ws.host
    ref_exe = ws.d / f"{stem}.x86_64"
    build = ws.build([host.compiler, *ws.cflags, f"{stem}.c", "reference.o", "-o", ref_exe.name])
    if not build.ok:
        msg = build.error()
        return _test_fault(
            entry,
            details,
            "reference build failed",
            msg,
            f"test {name} does not build with the x86-64 reference:\n{msg}",
            tool=host.compiler,
        )
    expected = ws.run(host.run_argv(ref_exe))
    if expected.timed_out:
        return _test_fault(
            entry,
            details,
            "reference timed out",
            "reference run timed out",
            f"test {name} timed out after {ws.timeout:g} s with the x86-64 reference",
            tool=None,
        )
    entry["expected_stdout"] = tail(expected.stdout)
    entry["expected_returncode"] = expected.returncode
    return expected


def _cross_compile_driver(
    ws: _Workspace, name: str, stem: str, entry: dict, details: dict
) -> Verification | None:
    """Compile driver `stem`.c alone for the target into `stem`.<target>.o: a driver that
    does not compile there is not portable, the test's fault.

    Returns:
        The "unverified" verdict when it does not compile (the reason in
        details["reference_error"] and entry["status"]), else None.
    """
    tgt = ws.tgt
    obj = f"{stem}.{tgt.name}.o"
    build = ws.build([tgt.compiler, *tgt.cflags, *ws.cflags, "-c", f"{stem}.c", "-o", obj])
    if not build.ok:
        msg = build.error()
        return _test_fault(
            entry,
            details,
            "driver does not cross-compile",
            msg,
            f"test {name} does not compile for {tgt.name}:\n{msg}",
            tool=tgt.compiler,
        )
    return None


def _test_fault(
    entry: dict, details: dict, status: str, reason: str, message: str, *, tool: str | None
) -> Verification:
    """Record that a test could not judge the candidate: the fault of the test or the
    reference, not the answer's, so the whole verification ends unverified.

    Returns:
        The "unverified" verdict with `message`, after setting details["reference_error"]
        to "<test name>: <reason>" and entry["status"] to `status`.
    """
    details["reference_error"] = f"{entry['name']}: {reason}"
    entry["status"] = status
    return Verification("unverified", message, tool=tool, details=details)


def _run_candidate(ws: _Workspace, stem: str, entry: dict) -> ToolResult | None:
    """Link driver `stem`'s target object with candidate.o and run it, under the
    target's qemu when it has one.

    Returns:
        The candidate's run, or None when it does not link (entry["status"] is then
        "link failed" and entry["diff"] the linker's message).
    """
    tgt = ws.tgt
    exe = ws.d / f"{stem}.{tgt.name}"
    link = ws.build(
        [
            tgt.compiler,
            *tgt.cflags,
            *tgt.link_flags,
            f"{stem}.{tgt.name}.o",
            "candidate.o",
            "-o",
            exe.name,
        ]
    )
    if not link.ok:
        entry["status"] = "link failed"
        entry["diff"] = link.error()
        return None
    return ws.run(tgt.run_argv(exe))


def _judge(expected: ToolResult, actual: ToolResult) -> dict:
    """Compare the candidate's run with the reference's: same stdout, same exit status
    and no timeout.

    Returns:
        The fields to add to the test's entry: stdout, returncode, timed_out, status
        ("passed", "timed out" or "output differs") and, on a failure, diff (and stderr
        when the candidate printed any).
    """
    fields: dict = {
        "stdout": tail(actual.stdout),
        "returncode": actual.returncode,
        "timed_out": actual.timed_out,
    }
    same = (
        not actual.timed_out
        and actual.stdout == expected.stdout
        and actual.returncode == expected.returncode
    )
    if same:
        fields["status"] = "passed"
    else:
        fields["status"] = "timed out" if actual.timed_out else "output differs"
        fields["diff"] = _diff(expected, actual)
        if actual.stderr.strip():
            fields["stderr"] = tail(actual.stderr)
    return fields


def _verdict(results: list[dict], tgt: Target, timeout: float, details: dict) -> Verification:
    """The verdict on the drivers' entries: all agree, or how the first disagreement went.

    Returns:
        "verified" when every driver agreed with the reference, else "failed" naming the
        first failing driver and the tool to blame (the linker or the runner).
    """
    failed = tally(results, details)
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
    return tests_failed(failed, len(results), what, tool=tool, details=details)
