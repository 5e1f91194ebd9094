"""The compiler-task commands: `lutlm optimize-ir | decompile | transpile`.

Each checks its inputs (files, the function, test paths, the tools) before the model
loads, generates through the LLM, and exits with the verdict of the tools.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lutlm.cli.args import (
    AddCommand,
    device_arg,
    non_negative,
    positive,
    positive_float,
    sampling_flags,
    weight_args,
)
from lutlm.cli.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNVERIFIED,
    TASK_EXIT_CODES_HELP,
    UsageError,
    note,
    one_line,
    warn,
)
from lutlm.cli.load import load_llm


def add_commands(command: AddCommand) -> None:
    opt = command(
        "optimize-ir",
        "a pass list for an LLVM-IR module from an LLM Compiler model, checked by opt",
        TASK_EXIT_CODES_HELP,
    )
    opt.add_argument("file", help="the .ll file")
    opt.add_argument("--max-retries", type=non_negative, default=0, help="compiler-feedback rounds")
    _task_args(opt, "optimize-ir", "llm-compiler")
    opt.set_defaults(func=_cmd_optimize_ir, timeout=60.0)

    dec = command(
        "decompile",
        "C for a function of a binary, recompiled and run with your tests",
        TASK_EXIT_CODES_HELP,
    )
    dec.add_argument("binary", help="an executable or object file (or assembly with --asm)")
    dec.add_argument("--function", help="the function to decompile")
    dec.add_argument(
        "--asm", action="store_true", help="BINARY is a file of the function's assembly text"
    )
    dec.add_argument(
        "--tests", nargs="+", metavar="FILE.c", help="C drivers whose main returns 0 on success"
    )
    _task_args(dec, "decompile", "llm4decompile")
    dec.set_defaults(func=_cmd_decompile, timeout=10.0)

    tra = command(
        "transpile",
        "x86-64 assembly to another ISA, run under qemu against your tests",
        TASK_EXIT_CODES_HELP,
    )
    tra.add_argument("file", help="the x86-64 .s file (AT&T or Intel syntax)")
    tra.add_argument(
        "--to", required=True, choices=("aarch64", "armv5", "riscv64", "x86_64"), help="target"
    )
    tra.add_argument(
        "--tests", nargs="+", metavar="DIR|FILE.c", help="C drivers that print results"
    )
    tra.add_argument("--source", help="the C source (the superopt preset shows it)")
    _task_args(tra, "transpile", "crt")
    tra.set_defaults(func=_cmd_transpile, timeout=10.0)


def _task_args(p: argparse.ArgumentParser, task: str, default_preset: str) -> None:
    from lutlm.tasks.presets import presets_for

    p.add_argument(
        "--model",
        help="the task model: a .gguf file, HF directory or `lutlm quantize` output",
    )
    p.add_argument(
        "--preset",
        default=default_preset,
        help=f"prompt preset: {', '.join(presets_for(task))}",
    )
    p.add_argument("--json", action="store_true", help="print the result and report as JSON")
    p.add_argument(
        "-o",
        "--output",
        help="write the result to this file (optimize-ir: the chosen optimized IR)",
    )
    p.add_argument("-n", "--n", type=positive, default=1, help="answers to sample (best of n)")
    p.add_argument("--timeout", type=positive_float, help="seconds per tool run")
    weight_args(p)
    device_arg(p)
    p.add_argument("--max-tokens", type=positive, help="default: the preset's")
    p.add_argument("--temperature", type=float, help="default: 0 (greedy), 1 when sampling n > 1")
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--prompt-lookup",
        type=non_negative,
        help="draft tokens per step from the prompt (default: 8)",
    )


def _task_params(args: argparse.Namespace, preset):
    """The preset's generation defaults, with the flags the user gave on top."""
    flags = sampling_flags(args)
    if args.temperature is None and args.n > 1:
        flags["temperature"] = 1.0  # best-of-n needs different samples
    try:
        return preset.sampling_params(n=args.n, **flags)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _read_text(path: str, what: str) -> str:
    file = Path(path)
    if not file.exists():
        raise UsageError(f"{path}: no such {what} file")
    if not file.is_file():
        raise UsageError(f"{path}: not a file (expected a {what} file)")
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror})") from None
    if not text.strip():
        raise UsageError(f"{path}: the {what} file is empty")
    return text


def _preset(name: str, task: str):
    from lutlm.tasks.presets import get_preset

    try:
        return get_preset(name, task)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _tests(paths: list[str] | None) -> list[tuple[str, str]]:
    """The --tests drivers, checked now: a typo'd path must not look like "no tests"."""
    from lutlm.tasks.toolchain import resolve_tests

    if not paths:
        warn("no --tests: the answer will only be compiled, so it stays unverified")
        return []
    try:
        found = resolve_tests(list(paths))
    except (ValueError, OSError) as e:
        raise UsageError(f"--tests: {e}") from None
    if not found:
        warn(f"--tests {' '.join(paths)} holds no .c files: the answer will be unverified")
    return found


def _check_verifiers(tools: list[str]) -> None:
    """Say before the model loads which verifier tools are missing (the answer is then
    unverified, exit 3), rather than only in the report at the end."""
    from lutlm.tasks.toolchain import PACKAGES, find_tool

    missing = [t for t in dict.fromkeys(tools) if find_tool(t) is None]
    if missing:
        packages = sorted({PACKAGES.get(t, t) for t in missing})
        warn(
            f"{', '.join(missing)} not installed (apt-get install {' '.join(packages)}): "
            "the answer will be unverified"
        )


def _check_ir(path: str, ir: str, timeout: float) -> None:
    """The input must be a module opt can read, else no pass list can be checked."""
    from lutlm.tasks.toolchain import MissingTool, run_tool, trim_message, workdir

    with workdir() as d:
        (d / "input.ll").write_text(ir, encoding="utf-8")
        try:
            res = run_tool(
                ["opt", "-passes=verify", "-disable-output", "input.ll"], cwd=d, timeout=timeout
            )
        except MissingTool:
            return  # no opt: _check_verifiers has said the answer will be unverified
    if not res.ok:
        first = (trim_message(res.stderr) or res.describe()).splitlines()[0]
        raise UsageError(f"{path}: not an LLVM-IR module opt can read: {first}")


class _Progress:
    """The LLM as the task functions call it, saying on stderr what each step does."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self.calls = 0

    def generate(self, prompts: Any, params: Any = None):
        return self._run(self.llm.generate, prompts, params)

    def chat(self, messages: Any, params: Any = None):
        return self._run(self.llm.chat, messages, params)

    def _run(self, method, arg: Any, params: Any):
        self.calls += 1
        n = params.n if params is not None else 1
        answers = "an answer" if n == 1 else f"{n} answers"
        again = "" if self.calls == 1 else f" (feedback round {self.calls - 1})"
        note(f"generating {answers}{again} ...")
        start = time.monotonic()
        outs = method(arg, params)
        tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
        note(f"generated {tokens} tokens in {time.monotonic() - start:.1f} s; verifying ...")
        return outs


def _report(result, as_json: bool, output: str | None = None) -> int:
    """Print a task's result; the exit code says verified (0), failed (1), unverified (3).

    output: a file for the usable artefact: the optimized IR (the model's or -Oz's, as
    the verifier chose) for optimize-ir, the answer otherwise.
    """
    if output:
        if result.task == "optimize-ir":
            artefact = result.verification.details.get("optimized_ir")
        else:
            artefact = result.answer
        if artefact is None:
            warn(f"nothing to write to {output} ({result.status})")
        else:
            Path(output).write_text(artefact.rstrip("\n") + "\n", encoding="utf-8")
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.answer if result.answer is not None else result.text)
        v = result.verification
        tool = f" ({v.tool})" if v.tool else ""
        print(f"\n[{v.status}{tool}] {v.message}", file=sys.stderr)
    return {"verified": EXIT_OK, "failed": EXIT_ERROR}.get(result.status, EXIT_UNVERIFIED)


def _cmd_optimize_ir(args: argparse.Namespace) -> int:
    from lutlm.tasks.optimize_ir import TASK, optimize_ir

    preset = _preset(args.preset, TASK)
    ir = _read_text(args.file, "LLVM-IR")
    params = _task_params(args, preset)
    _check_verifiers(["opt", "llc", "llvm-size"])
    _check_ir(args.file, ir, args.timeout)
    llm = load_llm(args)
    result = optimize_ir(
        _Progress(llm),
        ir,
        preset=preset,
        n=args.n,
        max_retries=args.max_retries,
        params=params,
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _cmd_decompile(args: argparse.Namespace) -> int:
    from lutlm.tasks.decompile import TASK, decompile, function_assembly

    preset = _preset(args.preset, TASK)
    if args.asm:
        source: dict[str, Any] = {"asm": _read_text(args.binary, "assembly")}
    else:
        if not args.function:
            raise UsageError("--function NAME is required when decompiling a binary")
        path = Path(args.binary)
        if not path.is_file():
            raise UsageError(f"{args.binary}: no such binary")
        try:  # objdump must run and list the function: checked now, not after the load
            function_assembly(path, args.function, syntax=preset.input_syntax or "att")
        except ValueError as e:
            raise UsageError(one_line(e)) from None
        source = {"binary": args.binary, "function": args.function}
    _tests(args.tests)
    params = _task_params(args, preset)
    _check_verifiers(["gcc"])
    llm = load_llm(args)
    result = decompile(
        _Progress(llm),
        **source,
        tests=args.tests or [],
        preset=preset,
        n=args.n,
        params=params,
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _cmd_transpile(args: argparse.Namespace) -> int:
    from lutlm.tasks.targets import get_target
    from lutlm.tasks.transpile import TASK, assembly_syntax, to_syntax, transpile

    preset = _preset(args.preset, TASK)
    try:
        preset.target_name(args.to)
    except ValueError as e:
        raise UsageError(str(e)) from None
    asm = _read_text(args.file, "assembly")
    if "c_code" in preset.fields() and not args.source:
        raise UsageError(f"preset {preset.name!r} shows the C source: pass --source FILE.c")
    c_code = _read_text(args.source, "C source") if args.source else None
    try:  # the model's syntax may need llvm-mc, which also rejects malformed assembly
        to_syntax(asm, preset.input_syntax or assembly_syntax(asm))
    except ValueError as e:
        raise UsageError(f"{args.file}: {one_line(e)}") from None
    _tests(args.tests)
    params = _task_params(args, preset)
    _check_verifiers(["gcc", *get_target(args.to).tools()])
    llm = load_llm(args)
    result = transpile(
        _Progress(llm),
        asm,
        args.to,
        tests=args.tests or [],
        preset=preset,
        c_code=c_code,
        n=args.n,
        params=params,
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)
