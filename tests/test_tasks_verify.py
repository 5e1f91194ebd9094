"""The task verifiers run the real tools (opt, llc, gcc, cross gcc, qemu-user, objdump,
llvm-mc) and classify known-good and known-bad answers written here by hand.

A test whose tools are missing is skipped, unless LUTLM_REQUIRE_TOOLS=1 (set by .ci/run),
where it fails: a CI machine without the tools must not report these tests as passing.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from lutlm.tasks import toolchain
from lutlm.tasks.disasm import att_to_intel, compile_c, intel_to_att, objdump_function
from lutlm.tasks.toolchain import MissingTool, find_tool, run_tool
from lutlm.tasks.verify_asm import verify_transpiled
from lutlm.tasks.verify_c import verify_c_function
from lutlm.tasks.verify_ir import (
    ToolError,
    count_ir_instructions,
    ir_stats,
    normalize_passes,
    verify_pass_list,
)

# every tool the verifiers use -> the Debian package that provides it
TOOLS = toolchain.PACKAGES
MISSING = {tool for tool in TOOLS if find_tool(tool) is None}


def require(*tools: str) -> None:
    """Skip (or, with LUTLM_REQUIRE_TOOLS=1, fail) when any of `tools` is missing."""
    missing = [t for t in tools if t in MISSING]
    if not missing:
        return
    pkgs = " ".join(sorted({TOOLS[t] for t in missing}))
    msg = f"{', '.join(missing)} not found; install with: apt-get install {pkgs}"
    if os.environ.get("LUTLM_REQUIRE_TOOLS") == "1":
        pytest.fail(f"LUTLM_REQUIRE_TOOLS=1 but {msg}")
    pytest.skip(msg)


def sh(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool directly (not through lutlm) for the tests' own expectations."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=True)


# --------------------------------------------------------------------------- toolchain


def test_find_tool_prefers_highest_version(tmp_path, monkeypatch):
    for name in ("lutlmfake-9", "lutlmfake-17", "lutlmfake-15", "lutlmfake-17.1x"):
        p = tmp_path / name
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_tool("lutlmfake") == str(tmp_path / "lutlmfake-17")
    assert find_tool("lutlmfake-15") == str(tmp_path / "lutlmfake-15")
    assert find_tool("lutlmnothing") is None


def test_run_tool_missing_and_timeout(tmp_path):
    with pytest.raises(MissingTool) as e:
        run_tool(["lutlm-no-such-tool"], cwd=tmp_path, timeout=5)
    assert e.value.tool == "lutlm-no-such-tool"
    # The timeout kills the whole process group: the background sleep must not keep the
    # pipes open (communicate() would then wait the full 30 s).
    t0 = time.monotonic()
    res = run_tool(["sh", "-c", "sleep 30 & sleep 30"], cwd=tmp_path, timeout=0.5)
    assert res.timed_out and res.returncode is None
    assert time.monotonic() - t0 < 10
    res = run_tool(
        ["sh", "-c", "printf 'x%.0s' $(seq 5000)"], cwd=tmp_path, timeout=10, max_output=100
    )
    assert res.ok and "truncated" in res.stdout and len(res.stdout) < 200


# --------------------------------------------------------------------------- optimize-ir

C_SUM = """
int sum(int *a, int n) {
  int s = 0;
  for (int i = 0; i < n; i++) s += a[i];
  return s;
}
int add3(int a, int b, int c) { int t = a + b; return t + c; }
"""


@pytest.fixture(scope="module")
def sum_ir(tmp_path_factory) -> str:
    require("clang")
    d = tmp_path_factory.mktemp("ir")
    (d / "sum.c").write_text(C_SUM)
    sh("clang", "-S", "-emit-llvm", "-O0", "-Xclang", "-disable-O0-optnone", "sum.c", cwd=d)
    return (d / "sum.ll").read_text()


def count_body_lines(ir: str) -> int:
    """Instructions counted the simplest way: indented lines inside define bodies (these
    test functions have no switch or landingpad)."""
    n, inside = 0, False
    for line in ir.splitlines():
        if line.startswith("define "):
            inside = True
        elif line.startswith("}"):
            inside = False
        elif inside and line.startswith("  ") and not line.strip().startswith(";"):
            n += 1
    return n


def measure_with_tools(ir: str, passes: str, d: Path) -> tuple[int, int, str]:
    """(instructions, text size, optimized IR), running opt/llc/llvm-size ourselves."""
    (d / "in.ll").write_text(ir)
    sh("opt", f"-passes={passes}", "-S", "in.ll", "-o", "out.ll", cwd=d)
    sh("llc", "-filetype=obj", "out.ll", "-o", "out.o", cwd=d)
    size = sh("llvm-size", "out.o", cwd=d).stdout.splitlines()[1].split()
    out = (d / "out.ll").read_text()
    return count_body_lines(out), int(size[0]), out


def test_pass_list_verified_with_measured_counts(sum_ir, tmp_path):
    require("opt", "llc", "llvm-size")
    v = verify_pass_list(sum_ir, "sroa,instcombine,simplifycfg")
    assert v.status == "verified", v.message
    instr, size, out = measure_with_tools(sum_ir, "sroa,instcombine,simplifycfg", tmp_path)
    oz_instr, oz_size, _ = measure_with_tools(sum_ir, "default<Oz>", tmp_path)
    in_instr, in_size, _ = measure_with_tools(sum_ir, "verify", tmp_path)
    d = v.details
    assert d["passes"] == "sroa,instcombine,simplifycfg"
    assert (d["instructions"], d["object_size"]) == (instr, size)
    assert (d["oz_instructions"], d["oz_object_size"]) == (oz_instr, oz_size)
    assert (d["input_instructions"], d["input_object_size"]) == (in_instr, in_size)
    assert 0 < d["instructions"] < d["input_instructions"]
    assert d["better_than_oz"] == (size <= oz_size)
    assert d["chosen"] == ("model" if size <= oz_size else "-Oz")
    stats = ir_stats(sum_ir)
    assert (stats["instructions"], stats["object_size"]) == (in_instr, in_size)

    # Predictions: matching ones are reported as matching, wrong ones go into the message.
    v = verify_pass_list(
        sum_ir, "sroa,instcombine,simplifycfg", predicted_instructions=instr, predicted_size=size
    )
    assert v.details["instructions_match"] and v.details["size_match"]
    v = verify_pass_list(sum_ir, "sroa,instcombine,simplifycfg", predicted_instructions=instr + 3)
    assert v.status == "verified" and v.details["instructions_match"] is False
    assert f"predicted instruction count {instr + 3}" in v.message and str(instr) in v.message


def test_unknown_pass_fails_with_opts_message(sum_ir):
    require("opt", "llc", "llvm-size")
    v = verify_pass_list(sum_ir, "no-such-pass")
    assert v.status == "failed" and v.message == "opt: unknown pass name 'no-such-pass'"
    v = verify_pass_list(sum_ir, "sroa,no-such-pass")
    assert v.status == "failed" and v.tool == "opt"
    assert re.fullmatch(r"opt: unknown (function )?pass( name)? 'no-such-pass'", v.message)
    assert v.details["chosen"] == "-Oz"


def test_pipeline_worse_than_oz_falls_back(sum_ir, tmp_path):
    require("opt", "llc", "llvm-size")
    # -O3 unrolls and vectorizes the loop: much larger than -Oz.
    v = verify_pass_list(sum_ir, ["-O3"])
    assert v.status == "verified", v.message
    assert v.details["passes"] == "default<O3>"
    assert v.details["better_than_oz"] is False and v.details["chosen"] == "-Oz"
    assert v.details["object_size"] > v.details["oz_object_size"]
    oz_instr, _, _ = measure_with_tools(sum_ir, "default<Oz>", tmp_path)
    assert count_body_lines(v.details["optimized_ir"]) == oz_instr


def test_legacy_flags_and_licm(sum_ir):
    require("opt", "llc", "llvm-size")
    # licm needs the MemorySSA loop adaptor; a bare licm makes LLVM abort.
    v = verify_pass_list(sum_ir, "-sroa -licm -instcombine")
    assert v.status == "verified", v.message
    assert v.details["passes"] == "sroa,loop-mssa(licm),instcombine"


def test_invalid_ir():
    require("opt", "llc", "llvm-size")
    with pytest.raises(ToolError, match="expected top-level entity"):
        ir_stats("this is not IR\n")
    v = verify_pass_list("define i32 @f() {\n  ret i64 0\n}\n", "sroa")
    assert v.status == "failed" and "input IR is invalid" in v.message


SWITCH_IR = """define i32 @f(i32 %x) {
entry:
  switch i32 %x, label %other [
    i32 1, label %one
    i32 2, label %two
  ]
one:                                              ; preds = %entry
  call void asm sideeffect "nop # [", ""()
  ret i32 10
two:
  %y = add i32 %x, 1 ; a comment with a [
  ret i32 %y
other:
  ret i32 0
}

declare i32 @g(i32)
"""


def test_instruction_count_of_multiline_switch(tmp_path):
    # switch (its case lines included), call, ret, add, ret, ret: counted by hand.
    assert count_ir_instructions(SWITCH_IR) == 6
    require("opt")
    (tmp_path / "f.ll").write_text(SWITCH_IR)
    printed = sh("opt", "-passes=verify", "-S", "f.ll", cwd=tmp_path).stdout
    assert count_ir_instructions(printed) == 6


def test_normalize_passes():
    assert normalize_passes("sroa,instcombine") == "sroa,instcombine"
    assert normalize_passes(["-sroa", "-instcombine"]) == "sroa,instcombine"
    assert normalize_passes("opt -passes='function(sroa),gvn'") == "function(sroa),gvn"
    assert normalize_passes("-Oz") == "default<Oz>"
    assert normalize_passes("-sroa,-gvn") == "sroa,gvn"
    assert normalize_passes("-functionattrs -loop-unswitch") == (
        "function-attrs,simple-loop-unswitch"
    )
    for bad, why in [
        ("", "empty"),
        ([], "empty"),
        ("sroa,,gvn", "empty pass name"),
        ("function(sroa", "unbalanced"),
        ("sroa;ls", "malformed"),
    ]:
        with pytest.raises(ValueError, match=why):
            normalize_passes(bad)


def test_missing_opt_is_unverified(sum_ir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    v = verify_pass_list(sum_ir, "sroa")
    assert v.status == "unverified" and v.tool == "opt"
    assert "opt not found" in v.message


# --------------------------------------------------------------------------- decompile

SUM_GOOD = "int sum(int *a, int n) { int s = 0; for (int i = 0; i < n; i++) s += a[i]; return s; }"
SUM_OFF_BY_ONE = (
    "int sum(int *a, int n) { int s = 0; for (int i = 1; i < n; i++) s += a[i]; return s; }"
)
SUM_LOOPS = "int sum(int *a, int n) { int s = 0; for (int i = 0; i < n;) s += a[i]; return s; }"
SUM_BROKEN = "int sum(int *a, int n) { return s }"

C_TEST_BASIC = """#include <assert.h>
int main(void) { int a[] = {1, 2, 3, 4}; assert(sum(a, 4) == 10); return 0; }
"""
C_TEST_EMPTY = """#include <stdio.h>
int main(void) { int a[1] = {5}; return sum(a, 0) == 0 ? 0 : 1; }
"""


@pytest.fixture
def c_tests(tmp_path) -> Path:
    d = tmp_path / "tests"
    d.mkdir()
    (d / "test_basic.c").write_text(C_TEST_BASIC)
    (d / "test_empty.c").write_text(C_TEST_EMPTY)
    return d


def test_decompiled_c_classified(c_tests):
    require("gcc")
    v = verify_c_function(SUM_GOOD, c_tests)
    assert v.status == "verified", v.message
    assert v.details["passed"] == v.details["total"] == 2

    v = verify_c_function(SUM_OFF_BY_ONE, c_tests)
    assert v.status == "failed"
    assert "test_basic.c" in v.message and "Assertion" in v.message
    by_name = {t["name"]: t for t in v.details["tests"]}
    assert by_name["test_empty.c"]["status"] == "passed"
    assert by_name["test_basic.c"]["status"] != "passed"

    v = verify_c_function(SUM_BROKEN, [c_tests / "test_basic.c"])
    assert v.status == "failed" and v.tool == "gcc"
    assert "does not compile" in v.message and "error:" in v.message and "'s'" in v.message

    t0 = time.monotonic()
    v = verify_c_function(SUM_LOOPS, [c_tests / "test_basic.c"], timeout=1)
    assert v.status == "failed" and "timed out" in v.message
    assert v.details["tests"][0]["timed_out"] is True
    assert time.monotonic() - t0 < 15


def test_decompiled_c_that_prints_forever_is_stopped(c_tests):
    require("gcc")
    spam = '#include <stdio.h>\nint sum(int *a, int n) { for (;;) puts("spam spam spam"); }'
    v = verify_c_function(spam, [c_tests / "test_basic.c"], timeout=5)
    assert v.status == "failed"
    test = v.details["tests"][0]
    assert test["status"] in ("killed by SIGXFSZ", "timed out"), test["status"]
    assert len(test["stdout"]) < 10_000  # a tail, not megabytes


def test_decompiled_c_without_tests_or_gcc(c_tests, tmp_path, monkeypatch):
    v = verify_c_function(SUM_GOOD, [])
    assert v.status == "unverified" and v.message == "no tests given"
    monkeypatch.setenv("PATH", str(tmp_path))
    v = verify_c_function(SUM_GOOD, c_tests)
    assert v.status == "unverified" and v.tool == "gcc"


# --------------------------------------------------------------------------- transpile

X86_REF = """\t.text
\t.globl add3
\t.type add3, @function
add3:
\tleal (%rdi,%rsi), %eax
\taddl %edx, %eax
\tret
\t.globl sum
\t.type sum, @function
sum:
\txorl %eax, %eax
\ttestl %esi, %esi
\tjle .Ldone
\tmovslq %esi, %rsi
\tleaq (%rdi,%rsi,4), %rcx
.Lloop:
\taddl (%rdi), %eax
\taddq $4, %rdi
\tcmpq %rcx, %rdi
\tjne .Lloop
.Ldone:
\tret
\t.section .note.GNU-stack,"",@progbits
"""

GOOD_ASM = {
    "aarch64": """\t.text
\t.globl add3
\t.type add3, %function
add3:
\tadd w0, w0, w1
\tadd w0, w0, w2
\tret
\t.globl sum
\t.type sum, %function
sum:
\tmov w2, 0
\tcmp w1, 0
\tble .Ldone
.Lloop:
\tldr w3, [x0], 4
\tadd w2, w2, w3
\tsubs w1, w1, 1
\tbne .Lloop
.Ldone:
\tmov w0, w2
\tret
""",
    "riscv64": """\t.text
\t.globl add3
\t.type add3, @function
add3:
\taddw a0, a0, a1
\taddw a0, a0, a2
\tret
\t.globl sum
\t.type sum, @function
sum:
\tli a2, 0
\tblez a1, .Ldone
.Lloop:
\tlw a3, 0(a0)
\taddw a2, a2, a3
\taddi a0, a0, 4
\taddiw a1, a1, -1
\tbnez a1, .Lloop
.Ldone:
\tmv a0, a2
\tret
""",
    "armv5": """\t.text
\t.arm
\t.globl add3
\t.type add3, %function
add3:
\tadd r0, r0, r1
\tadd r0, r0, r2
\tbx lr
\t.globl sum
\t.type sum, %function
sum:
\tmov r2, #0
\tcmp r1, #0
\tble .Ldone
.Lloop:
\tldr r3, [r0], #4
\tadd r2, r2, r3
\tsubs r1, r1, #1
\tbne .Lloop
.Ldone:
\tmov r0, r2
\tbx lr
""",
}
# add3 computes a + b - c: a plausible transpiler slip.
WRONG_ASM = {
    "aarch64": GOOD_ASM["aarch64"].replace("add w0, w0, w2", "sub w0, w0, w2"),
    "riscv64": GOOD_ASM["riscv64"].replace("addw a0, a0, a2", "subw a0, a0, a2"),
    "armv5": GOOD_ASM["armv5"].replace("add r0, r0, r2", "sub r0, r0, r2"),
}
# x86 syntax in the target's file: the assembler must reject it.
BROKEN_ASM = {
    t: asm.replace("\tret\n", "\tmovl %eax, %ebx\n\tret\n", 1) for t, asm in GOOD_ASM.items()
}
BROKEN_ASM["armv5"] = GOOD_ASM["armv5"].replace("bx lr", "movl %eax, %ebx\n\tbx lr", 1)

ASM_DRIVER = """#include <stdio.h>
int add3(int a, int b, int c);
int sum(const int *a, int n);
int main(void) {
  int v[] = {3, -1, 7, 10};
  printf("%d %d\\n", add3(1, 2, 3), add3(-5, 2, 100));
  printf("%d %d\\n", sum(v, 4), sum(v, 0));
  return sum(v, 2);
}
"""

CROSS = {
    "aarch64": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "riscv64": ("riscv64-linux-gnu-gcc", "qemu-riscv64"),
    "armv5": ("arm-linux-gnueabi-gcc", "qemu-arm"),
}


@pytest.mark.parametrize("target", sorted(GOOD_ASM))
def test_transpiled_asm_classified(target, tmp_path):
    require("gcc", *CROSS[target])
    (tmp_path / "t_add_sum.c").write_text(ASM_DRIVER)

    v = verify_transpiled(GOOD_ASM[target], target, tmp_path, reference_asm=X86_REF)
    assert v.status == "verified", v.message
    assert v.details["tests"][0]["expected_stdout"] == "6 97\n19 0\n"
    assert v.details["tests"][0]["expected_returncode"] == 2

    v = verify_transpiled(WRONG_ASM[target], target, tmp_path, reference_asm=X86_REF)
    assert v.status == "failed" and "t_add_sum.c" in v.message
    assert "-6 97" in v.message and "+0 -103" in v.message  # the diff

    v = verify_transpiled(BROKEN_ASM[target], target, tmp_path, reference_asm=X86_REF)
    assert v.status == "failed" and v.tool == CROSS[target][0]
    assert "does not assemble" in v.message and "Error:" in v.message


def test_transpiled_asm_errors(tmp_path, monkeypatch):
    require("gcc", "aarch64-linux-gnu-gcc")
    (tmp_path / "t.c").write_text(ASM_DRIVER)
    with pytest.raises(ValueError, match="aarch64, armv5, riscv64, x86_64"):
        verify_transpiled(GOOD_ASM["aarch64"], "mips", tmp_path, reference_asm=X86_REF)
    v = verify_transpiled(GOOD_ASM["aarch64"], "aarch64", [], reference_asm=X86_REF)
    assert v.status == "unverified" and v.message == "no tests given"

    real = toolchain.find_tool

    def no_qemu(name: str) -> str | None:
        return None if name.startswith("qemu-") else real(name)

    monkeypatch.setattr(toolchain, "find_tool", no_qemu)
    v = verify_transpiled(GOOD_ASM["aarch64"], "aarch64", tmp_path, reference_asm=X86_REF)
    assert v.status == "unverified" and v.tool == "qemu-aarch64"
    assert "qemu-aarch64 not found" in v.message


def test_x86_candidate_runs_natively(tmp_path):
    require("gcc")
    (tmp_path / "t.c").write_text(ASM_DRIVER)
    # A different but equivalent add3 (an optimizer's kind of answer), then a wrong one.
    other = X86_REF.replace("leal (%rdi,%rsi), %eax\n", "movl %edi, %eax\n\taddl %esi, %eax\n")
    assert other != X86_REF
    v = verify_transpiled(other.rstrip("\n"), "x86_64", tmp_path, reference_asm=X86_REF)
    assert v.status == "verified" and "natively" in v.message, v.message
    wrong = X86_REF.replace("addl %edx, %eax", "subl %edx, %eax")
    v = verify_transpiled(wrong, "x86_64", tmp_path, reference_asm=X86_REF)
    assert v.status == "failed" and "-6 97" in v.message


def test_transpiled_asm_timeout(tmp_path):
    require("gcc", *CROSS["aarch64"])
    (tmp_path / "t.c").write_text(ASM_DRIVER)
    spin = GOOD_ASM["aarch64"].replace("add3:\n", "add3:\n.Lspin:\n\tb .Lspin\n")
    v = verify_transpiled(spin, "aarch64", tmp_path, reference_asm=X86_REF, timeout=1)
    assert v.status == "failed" and "timed out" in v.message


# --------------------------------------------------------------------------- disasm

C_PROGRAM = """#include <stdio.h>
long big(void) { long x = 0x123456789abcL; return x; }
int add3(int a, int b, int c) { return a + b + c; }
int main(void) { printf("%d %ld\\n", add3(1, 2, 3), big()); return 0; }
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    require("gcc")
    d = tmp_path_factory.mktemp("prog")
    (d / "p.c").write_text(C_PROGRAM)
    sh("gcc", "-O0", "-o", "p", "p.c", cwd=d)
    return d / "p"


def test_objdump_function_is_clean(program):
    require("objdump")
    asm = objdump_function(program, "add3")
    lines = asm.splitlines()
    assert lines[0] == "<add3>:"
    body = "\n".join(lines[1:])
    assert not re.search(r"^\s*[0-9a-f]+:", body, re.M), "addresses left in"
    assert not re.search(r"\b[0-9a-f]{2} [0-9a-f]{2}\b", body), "raw bytes left in"
    assert "#" not in body
    assert re.search(r"^mov\s+%edi,-0x4\(%rbp\)$", body, re.M)
    assert re.search(r"^add\s+%edx,%eax$", body, re.M) and lines[-1] == "ret"
    assert "main" not in body and "movabs" not in body  # only this function

    # An instruction objdump wraps onto two lines leaves no bytes-only line behind.
    big = objdump_function(program, "big")
    assert "movabs $0x123456789abc,%rax" in big.replace("    ", " ").replace("   ", " ")
    assert all(not re.fullmatch(r"([0-9a-f]{2}\s?)+", ln) for ln in big.splitlines())

    intel = objdump_function(program, "add3", syntax="intel")
    assert "DWORD PTR [rbp-0x4],edi" in intel


def test_objdump_function_errors(program, tmp_path):
    require("objdump")
    with pytest.raises(ValueError, match="add3"):
        objdump_function(program, "no_such_function")
    (tmp_path / "notes.txt").write_text("not an object file\n")
    with pytest.raises(ValueError, match="file format not recognized"):
        objdump_function(tmp_path / "notes.txt", "f")


def test_compile_c_and_syntax_conversion(tmp_path):
    require("clang", "gcc", "llvm-mc")
    ir = compile_c(C_PROGRAM, to="ir")
    assert "define dso_local i32 @add3" in ir and "optnone" not in ir
    att = compile_c(C_PROGRAM, to="asm", opt="-O1")
    intel = compile_c(C_PROGRAM, to="asm", syntax="intel", opt="-O1")
    assert ".intel_syntax noprefix" in intel and "%rax" not in intel
    assert isinstance(compile_c(C_PROGRAM, to="obj"), bytes)
    with pytest.raises(ValueError, match="error"):
        compile_c("int f(", to="asm")

    # Both conversions give assembly gcc accepts and that behaves like the original.
    for name, asm in [("to_intel", att_to_intel(att)), ("to_att", intel_to_att(intel))]:
        (tmp_path / f"{name}.s").write_text(asm)
        sh("gcc", "-o", name, f"{name}.s", cwd=tmp_path)
        out = subprocess.run(
            [str(tmp_path / name)], capture_output=True, text=True, timeout=10
        ).stdout
        assert out == "6 20015998343868\n", name
    with pytest.raises(ValueError):
        att_to_intel("this is not assembly\n")


def test_missing_tool_message_names_package():
    e = MissingTool("qemu-riscv64")
    assert e.tool == "qemu-riscv64" and "qemu-user" in str(e)
