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

import re
from pathlib import Path

from .report import Verification
from .toolchain import (
    MissingTool,
    find_tool,
    resolve_tests,
    run_tool,
    tail,
    workdir,
)
from .untrusted import UnsafeInput, check_source

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
    for name, src in found:
        check_source(src, "c", f"test {name}")
    details: dict = {"compiler": compiler, "cflags": list(cflags), "tests": []}
    try:
        check_source(source, "c", "the candidate")
    except UnsafeInput as e:
        return Verification("failed", str(e), details=details)
    if not found:
        return Verification("unverified", "no tests given", details=details)
    if find_tool(compiler) is None:
        e = MissingTool(compiler)
        return Verification("unverified", str(e), tool=compiler, details=details)

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
                unit = d / f"unit_{i}.c"
                # #line keeps gcc's diagnostics pointing into the driver's own file.
                unit.write_text(
                    f'#line 1 "candidate.c"\n{source}\n#line 1 "{name}"\n{test_src}\n',
                    encoding="utf-8",
                )
                exe = d / f"test{i}_{re.sub(r'[^A-Za-z0-9_]', '_', Path(name).stem)}"
                build = run_tool(
                    [compiler, *cflags, unit.name, "-o", exe.name, *ldflags],
                    cwd=d,
                    timeout=compile_timeout,
                )
                entry: dict = {"name": name, "returncode": None, "timed_out": False}
                if not build.ok:
                    entry.update(
                        status="build failed",
                        stderr=build.error(),
                    )
                    results.append(entry)
                    continue
                run = run_tool([str(exe)], cwd=d, timeout=timeout, untrusted=True)
                entry.update(
                    returncode=run.returncode,
                    timed_out=run.timed_out,
                    stdout=tail(run.stdout),
                    stderr=tail(run.stderr),
                    status="passed" if run.ok else run.describe(),
                )
                results.append(entry)
    except MissingTool as e:
        return Verification("unverified", str(e), tool=e.tool, details=details)

    failed = [r for r in results if r["status"] != "passed"]
    details["total"] = len(results)
    details["passed"] = len(results) - len(failed)
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
    return Verification(
        "failed",
        f"{len(failed)} of {len(results)} tests failed; test {first['name']} {what}",
        tool=compiler,
        details=details,
    )
