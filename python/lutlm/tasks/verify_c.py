"""Checking decompiled C (the decompile task) by recompiling it and running tests.

A decompiler model's answer is worth something only when it compiles again
("re-compilability") and behaves like the original ("re-executability", the measure the
LLM4Decompile paper reports). lutlm compiles the candidate on its own first, so a syntax
error is reported against the candidate alone; then it builds each test driver in one
translation unit after the candidate, as that paper's evaluation did, so the driver sees
the candidate's prototypes (a call through an implicit declaration would silently
truncate a float or pointer result). Each driver's main() returns 0 when the function
behaves (typically with assert); it runs with a timeout, so a decompiled infinite loop
fails instead of hanging the server. The test programs run natively, in run_tool's
sandbox (no network, no files but the work directory and the toolchain, capped memory,
time, file size and processes). Text that would make the compiler read a file
(lutlm.tasks.untrusted) fails the candidate, or is a ValueError for a test driver.
"""

from __future__ import annotations

from pathlib import Path

from .report import Verification, tally, tests_failed
from .toolchain import (
    MissingTool,
    driver_stem,
    missing_tool_verdict,
    resolve_tests,
    run_tool,
    screen_answer,
    tail,
    workdir,
)

__all__ = ["verify_c_function"]


def verify_c_function(
    source: str,
    tests: str | Path | list[str | Path],
    *,
    timeout: float = 10,
    compiler: str = "gcc",
    cflags: tuple[str, ...] = ("-O0",),
    ldflags: tuple[str, ...] = ("-lm",),
    compile_timeout: float = 60,
) -> Verification:
    """Compile `source` (the decompiled function(s)) and run every test driver against it.

    tests: a directory of *.c drivers, a file, a list of files, or driver source text
    (see toolchain.resolve_tests). `timeout` bounds each test run, `compile_timeout`
    each compiler run.

    "failed": the candidate does not compile (gcc's message), a driver does not build
    with it (e.g. a wrong signature), or a test exits non-zero, crashes or times out
    (message names the test and what happened). "verified": every test passed.
    "unverified": no tests were given, or the compiler is missing (named in `tool`).
    details: compiler, cflags, passed, total, and tests: a list of {name, status,
    returncode, timed_out, stdout, stderr} (output tails).
    """
    found = resolve_tests(tests)
    details: dict = {"compiler": compiler, "cflags": list(cflags), "tests": []}
    early = screen_answer(source, "c", found, [compiler], details)
    if early is not None:
        return early

    results: list[dict] = details["tests"]
    try:
        with workdir() as d:
            cand = d / "candidate.c"
            cand.write_text(source, encoding="utf-8")
            res = run_tool(
                [compiler, *cflags, "-c", cand.name, "-o", "candidate.o"],
                cwd=d,
                timeout=compile_timeout,
            )
            if not res.ok:
                msg = res.error()
                return Verification(
                    "failed",
                    f"the candidate does not compile:\n{msg}",
                    tool=compiler,
                    details=details,
                )

            for i, (name, test_src) in enumerate(found):
                # #line keeps gcc's diagnostics pointing into the driver's own file.
                unit_src = f'#line 1 "candidate.c"\n{source}\n#line 1 "{name}"\n{test_src}\n'
                entry = _run_test(
                    d,
                    i,
                    name,
                    unit_src,
                    [compiler, *cflags],
                    ldflags,
                    timeout=timeout,
                    compile_timeout=compile_timeout,
                )
                results.append(entry)
    except MissingTool as e:
        return missing_tool_verdict(e, details)
    return _verdict(results, compiler, timeout, details)


def _run_test(
    d: Path,
    i: int,
    name: str,
    unit_src: str,
    compile_argv: list[str],
    ldflags: tuple[str, ...],
    *,
    timeout: float,
    compile_timeout: float,
) -> dict:
    """Build test `i`'s translation unit (the candidate, then the driver) in `d` with
    `compile_argv` (the compiler and its flags) and run it.

    Returns:
        The test's entry for details["tests"]: {name, returncode, timed_out, status,
        stderr} when it does not build, with stdout too when it ran.
    """
    unit = d / f"unit_{i}.c"
    unit.write_text(unit_src, encoding="utf-8")
    exe = d / f"test{i}_{driver_stem(name)}"
    build = run_tool(
        [*compile_argv, unit.name, "-o", exe.name, *ldflags],
        cwd=d,
        timeout=compile_timeout,
    )
    entry: dict = {"name": name, "returncode": None, "timed_out": False}
    if not build.ok:
        entry.update(status="build failed", stderr=build.error())
        return entry
    run = run_tool([str(exe)], cwd=d, timeout=timeout, untrusted=True)
    entry.update(
        returncode=run.returncode,
        timed_out=run.timed_out,
        stdout=tail(run.stdout),
        stderr=tail(run.stderr),
        status="passed" if run.ok else run.describe(),
    )
    return entry


def _verdict(results: list[dict], compiler: str, timeout: float, details: dict) -> Verification:
    """The verdict on the tests' entries: all passed, or how the first failure went.

    Returns:
        "verified" when every test passed, else "failed" naming the first failing test.
    """
    failed = tally(results, details)
    if not failed:
        return Verification(
            "verified", f"all {len(results)} tests passed", tool=compiler, details=details
        )
    first = failed[0]
    if first["status"] == "build failed":
        what = f"does not build with the candidate:\n{first['stderr']}"
    else:
        what = f"failed: {first['status']}"
        if first.get("timed_out"):
            what += f" after {timeout:g} s"
        out = (first.get("stderr") or first.get("stdout") or "").strip()
        if out:
            what += f"\n{tail(out, 1000)}"
    return tests_failed(failed, len(results), what, tool=compiler, details=details)
