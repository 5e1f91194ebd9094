"""Making the inputs compiler-task models were trained on: IR, assembly, objdump listings.

Each model saw its input produced one particular way, and answers degrade when the input
looks different, so lutlm reproduces those ways here:

- optimize-ir models read unoptimized LLVM IR from clang (`compile_c(to="ir")`);
- the decompiler (LLM4Decompile) reads one function of `objdump -d` output with the
  addresses, raw instruction bytes and `#` comments removed (`objdump_function`), the
  preprocessing its paper published;
- transpilers read gcc's assembly: Intel syntax for the CRT models, AT&T for the gg models
  (`compile_c(to="asm")`, `att_to_intel`, `intel_to_att`).

Every tool runs through toolchain.run_tool: a list argv, a timeout, a temporary directory.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Literal

from .targets import get_target
from .toolchain import MissingTool, ToolError, run_tool, trim_message, workdir
from .untrusted import check_source

__all__ = [
    "MissingTool",
    "ToolError",
    "att_to_intel",
    "compile_c",
    "intel_to_att",
    "list_functions",
    "objdump_function",
]

_OPT_LEVEL = re.compile(r"-O([0-3sgz]|fast)?")


def compile_c(
    source: str,
    *,
    to: Literal["ir", "asm", "obj"],
    syntax: Literal["att", "intel"] = "att",
    opt: str = "-O0",
    target: str = "x86_64",
    extra_flags: tuple[str, ...] = (),
    timeout: float = 60,
) -> str | bytes:
    """Compile C source to LLVM IR (str), assembly (str) or an object file (bytes).

    to="ir": `clang -S -emit-llvm` (with --target for a foreign target). At -O0 it adds
    `-Xclang -disable-O0-optnone`: otherwise every function is marked optnone and opt
    leaves it untouched, which would make any pass list look useless.
    to="asm": `gcc -S`, with -masm=intel for syntax="intel" (x86-64 only); a foreign
    target uses its cross gcc and flags (TARGETS). to="obj": the same compiler with -c.
    opt is an optimization level flag (-O0 ... -O3, -Os, -Oz, -Og, -Ofast).

    Raises ValueError for an unknown target/level/syntax, ToolError (a ValueError) with
    the compiler's message when the source does not compile, MissingTool when the
    compiler is absent.
    """
    if not _OPT_LEVEL.fullmatch(opt):
        raise ValueError(f"opt must be an optimization level like -O0 or -Oz, got {opt!r}")
    if to not in ("ir", "asm", "obj"):
        raise ValueError(f"to must be 'ir', 'asm' or 'obj', got {to!r}")
    if syntax not in ("att", "intel"):
        raise ValueError(f"syntax must be 'att' or 'intel', got {syntax!r}")
    tgt = get_target(target)
    if syntax == "intel" and target != "x86_64":
        raise ValueError(f"Intel syntax exists only for x86_64, not {target}")

    if to == "ir":
        argv = ["clang", "-S", "-emit-llvm", opt]
        if target != "x86_64":
            argv += [f"--target={tgt.triple}", *tgt.cflags]
        if opt == "-O0":
            argv += ["-Xclang", "-disable-O0-optnone"]
        out_name = "input.ll"
    else:
        argv = [tgt.compiler, *tgt.cflags, opt]
        if to == "asm":
            argv.append("-S")
            if syntax == "intel":
                argv.append("-masm=intel")
            out_name = "input.s"
        else:
            argv.append("-c")
            out_name = "input.o"
    argv += [*extra_flags, "input.c", "-o", out_name]
    check_source(source, "c", "the C source")

    with workdir() as d:
        (d / "input.c").write_text(source, encoding="utf-8")
        res = run_tool(argv, cwd=d, timeout=timeout)
        if not res.ok:
            raise ToolError(argv[0], trim_message(res.stderr) or f"{argv[0]} {res.describe()}")
        out = d / out_name
        if to == "obj":
            return out.read_bytes()
        return out.read_text(encoding="utf-8", errors="replace")


_SYMBOL_LINE = re.compile(r"^[0-9a-fA-F]+ <(.+)>:\s*$")
# A wrapped instruction's continuation: address, then only raw bytes.
_BYTES_ONLY = re.compile(r"^\s*[0-9a-fA-F]+:\s+([0-9a-fA-F]{2}\s)*[0-9a-fA-F]{2}\s*$")


def _objdump(binary: str | Path, syntax: str, timeout: float) -> str:
    if syntax not in ("att", "intel"):
        raise ValueError(f"syntax must be 'att' or 'intel', got {syntax!r}")
    path = Path(binary).resolve()
    if not path.is_file():
        raise ValueError(f"{binary}: no such file")
    argv = ["objdump", "-d"] + (["-M", "intel"] if syntax == "intel" else []) + ["binary"]
    with workdir() as d:
        # The sandboxed objdump sees its work directory only.
        shutil.copyfile(path, d / "binary")
        res = run_tool(argv, cwd=d, timeout=timeout, max_output=64 * 1024 * 1024)
    if not res.ok:
        # objdump names the sandbox's copy; the user knows the file by its own name.
        message = re.sub(r"(?<![\w/.])'?binary'?(?=:)", str(binary), trim_message(res.stderr))
        raise ValueError(message or f"objdump {res.describe()}")
    return res.stdout


def list_functions(binary: str | Path, *, timeout: float = 60) -> list[str]:
    """Names of the symbols objdump -d shows code for, in address order."""
    return [
        m.group(1)
        for line in _objdump(binary, "att", timeout).splitlines()
        if (m := _SYMBOL_LINE.match(line))
    ]


def objdump_function(
    binary: str | Path,
    function: str,
    *,
    syntax: Literal["att", "intel"] = "att",
    keep_wrapped_bytes: bool = False,
    timeout: float = 60,
) -> str:
    """One function's disassembly, cleaned the way LLM4Decompile's published preprocessing
    cleaned it, so the decompiler sees what it was trained on.

    From `objdump -d` output: the function's block (from its `<name>:` line to the blank
    line that ends it); the label line becomes `<name>:` without its address; on each
    instruction line the address and raw bytes columns (tab-separated) are dropped and
    anything after `#` (objdump's comments) is removed. Instructions keep their operands,
    including branch targets such as `jmp 1150 <f+0x17>`.

    objdump wraps instructions longer than 7 bytes onto a second line holding only bytes;
    the published preprocessing left those bytes in the text as a line of their own.
    lutlm drops them unless keep_wrapped_bytes=True reproduces that exactly.

    Raises ValueError for an unknown function (listing some that exist), a file that is
    not an object/executable, or objdump's own error; MissingTool when objdump is absent.
    """
    listing = _objdump(binary, syntax, timeout)
    lines = listing.splitlines()
    names: list[str] = []
    start = None
    for i, line in enumerate(lines):
        m = _SYMBOL_LINE.match(line)
        if m:
            names.append(m.group(1))
            if m.group(1) == function and start is None:
                start = i
    if start is None:
        if not names:
            raise ValueError(f"{binary}: objdump found no functions to disassemble")
        user = [n for n in names if not n.startswith(("_", ".")) and "@" not in n]
        shown = (user or names)[:12]
        more = f" (and {len(names) - len(shown)} more)" if len(names) > len(shown) else ""
        raise ValueError(
            f"function {function!r} not found in {binary}; functions: {', '.join(shown)}{more}"
        )

    out = [f"<{function}>:"]
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if _BYTES_ONLY.match(line) and not keep_wrapped_bytes:
            continue
        fields = line.split("\t")
        text = "\t".join(fields[min(len(fields) - 1, 2) :])
        text = text.split("#")[0].strip()
        if text:
            out.append(text)
    return "\n".join(out)


_IMM_COMMENT = re.compile(r"\s+# imm = \S+$", re.MULTILINE)


def _llvm_mc(asm: str, in_syntax: str, out_variant: int, timeout: float) -> str:
    check_source(asm, "asm", "the assembly")
    argv = [
        "llvm-mc",
        "-triple=x86_64-unknown-linux-gnu",
        f"--x86-asm-syntax={in_syntax}",
        f"-output-asm-variant={out_variant}",
        "input.s",
    ]
    with workdir() as d:
        (d / "input.s").write_text(asm, encoding="utf-8")
        res = run_tool(argv, cwd=d, timeout=timeout)
    if not res.ok:
        raise ToolError("llvm-mc", trim_message(res.stderr) or f"llvm-mc {res.describe()}")
    return _IMM_COMMENT.sub("", res.stdout)


def att_to_intel(asm: str, *, timeout: float = 60) -> str:
    """x86-64 assembly from AT&T to Intel syntax (what the CRT models read), with llvm-mc.

    llvm-mc parses the whole file, so directives survive, but the text is re-printed in
    its style: comments are dropped, `.size f, .-f` becomes a temporary label,
    immediates print in decimal, and AT&T output spells `ret` as `retq` (LLVM 14). The
    result starts with `.intel_syntax noprefix`, so gcc and as assemble it. Raises
    ToolError with llvm-mc's message for invalid input.
    """
    text = _llvm_mc(asm, "att", 1, timeout)
    return ".intel_syntax noprefix\n" + text


def intel_to_att(asm: str, *, timeout: float = 60) -> str:
    """x86-64 assembly from Intel (gcc -masm=intel, `.intel_syntax noprefix`) to AT&T
    syntax (what the gg models read), with llvm-mc; the same caveats as att_to_intel."""
    return _llvm_mc(asm, "intel", 0, timeout)
