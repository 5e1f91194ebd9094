"""Checking an optimization pass list predicted for LLVM IR (the optimize-ir task).

A compiler-optimization model predicts a pass pipeline (and, for some models, the
instruction count and object size the pipeline will give). lutlm runs the pipeline with
the real `opt`, measures the result the way the model's training data did (IR instruction
count of the defined functions; text size of the object that `llc` makes, read with
`llvm-size`), and compares with `opt -passes='default<Oz>'`. When the model's pipeline
gives a larger object than -Oz, the -Oz result is chosen instead, so using the model never
makes code bigger.

Pass names: `opt -passes=` takes the new pass manager's names (see `opt -print-passes`).
Legacy flags ("-sroa -instcombine") are turned into that syntax by `normalize_passes`,
with the few legacy names whose new-PM name differs renamed (functionattrs ->
function-attrs, loop-unswitch -> simple-loop-unswitch, ...), and "-O2"-style levels
mapped to "default<O2>". A bare `licm`/`lnicm` at the top level is wrapped in
`loop-mssa(...)`, the only adaptor LLVM accepts it in (with a plain loop adaptor LLVM 14
aborts with "LICM requires MemorySSA"). Any name opt still rejects makes the answer
"failed", with opt's own error message, which a caller can send back to the model.
"""

from __future__ import annotations

import re
from pathlib import Path

from .report import Verification
from .toolchain import (
    MissingTool,
    ToolError,
    missing_tool_verdict,
    run_tool,
    trim_message,
    workdir,
)
from .untrusted import check_source

__all__ = ["ToolError", "count_ir_instructions", "ir_stats", "normalize_passes", "verify_pass_list"]

# Legacy pass-manager flag names whose new-pass-manager name differs.
LEGACY_RENAMES: dict[str, str] = {
    "functionattrs": "function-attrs",
    "rpo-functionattrs": "rpo-function-attrs",
    "loop-unswitch": "simple-loop-unswitch",
    "early-cse-memssa": "early-cse<memssa>",
}

# Optimization levels given as flags.
_LEVELS = {"O0", "O1", "O2", "O3", "Os", "Oz"}

# Passes LLVM only runs inside a MemorySSA-enabled loop adaptor.
_NEEDS_LOOP_MSSA = {"licm", "lnicm"}

_PASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(<[^<>]*>)?")


def _split_top_level(pipeline: str) -> list[str]:
    """Split a pipeline on the commas that are not inside (...) or <...>."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(pipeline):
        if ch in "(<":
            depth += 1
        elif ch in ")>":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {ch!r} in pass pipeline {pipeline!r}")
        elif ch == "," and depth == 0:
            parts.append(pipeline[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced parentheses or angle brackets in pipeline {pipeline!r}")
    parts.append(pipeline[start:])
    return parts


def normalize_passes(passes: str | list[str]) -> str:
    """The pass pipeline in `opt -passes=` syntax, from any form a model or user writes it.

    Accepts a new-PM pipeline ("sroa,instcombine", "module(function(sroa))"), a legacy
    flag list (["-sroa", "-instcombine"] or "-sroa -instcombine"), optionally prefixed by
    "opt", "-passes=" / "--passes=" / "-p" or wrapped in quotes, since models copy those
    from their training text. Raises ValueError naming the problem for empty input or a
    token that cannot be a pass name; whether opt knows the name is opt's to say.
    """
    if isinstance(passes, str):
        text = passes.strip()
        tokens = text.split()
    elif isinstance(passes, list | tuple):
        tokens = []
        for p in passes:
            if not isinstance(p, str):
                raise ValueError(f"pass list entries must be strings, got {type(p).__name__}")
            tokens.extend(p.split())
    else:
        raise ValueError(f"passes must be a string or a list of strings, got {type(passes)}")

    tokens = [t.strip().strip("'\"`") for t in tokens]
    tokens = [t for t in tokens if t]
    if tokens and tokens[0] == "opt":
        tokens = tokens[1:]
    names: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        for prefix in ("--passes=", "-passes=", "-p="):
            if tok.startswith(prefix):
                tok = tok[len(prefix) :].strip("'\"")
                break
        else:
            if tok in ("-p", "--passes", "-passes"):
                i += 1
                if i >= len(tokens):
                    raise ValueError(f"{tok} is not followed by a pipeline")
                tok = tokens[i]
        i += 1
        if not tok:
            continue
        if tok.startswith("-"):
            # Legacy flags: one pass (or an -O level) per flag; "-sroa,-gvn" is taken too.
            for flag in tok.split(","):
                name = flag.strip().lstrip("-")
                if not name:
                    raise ValueError(f"malformed pass flag {tok!r}")
                if name in _LEVELS:
                    names.append(f"default<{name}>")
                else:
                    names.append(LEGACY_RENAMES.get(name, name))
        else:
            names.extend(_split_top_level(tok))

    if not names:
        raise ValueError("empty pass list")
    out = []
    for name in names:
        name = name.strip()
        if not name:
            raise ValueError(f"empty pass name in pipeline {','.join(names)!r}")
        if name in _LEVELS:
            name = f"default<{name}>"
        if "(" in name:
            # A nested pipeline such as function(sroa,instcombine): check its inside too.
            head, _, rest = name.partition("(")
            if not rest.endswith(")") or not _PASS_NAME.fullmatch(head):
                raise ValueError(f"malformed nested pipeline {name!r}")
            inner = rest[:-1]
            if inner.strip():
                normalize_passes(inner)
        elif not _PASS_NAME.fullmatch(name):
            raise ValueError(f"malformed pass name {name!r}")
        if name in _NEEDS_LOOP_MSSA:
            name = f"loop-mssa({name})"
        out.append(name)
    return ",".join(out)


_DEFINE = re.compile(r"^define\b")
_LANDINGPAD_CLAUSE = re.compile(r"^(cleanup|catch|filter)\b")
_QUOTED = re.compile(r'"[^"]*"')


def count_ir_instructions(ir: str) -> int:
    """Number of IR instructions in the module's defined functions (what instcount counts).

    Counted from textual IR as opt prints it: inside each `define ... {` body, every
    indented non-comment line is one instruction, except the case lines of a multi-line
    `switch [...]` and a landingpad's clause lines, which belong to the instruction above.
    Labels ("entry:", "7:") are not indented and are not counted.
    """
    count = 0
    in_body = False
    bracket_depth = 0
    for raw in ir.splitlines():
        if not in_body:
            if _DEFINE.match(raw) and raw.rstrip().endswith("{"):
                in_body = True
                bracket_depth = 0
            continue
        if raw.startswith("}"):
            in_body = False
            continue
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if not raw[:1].isspace():  # a basic-block label
            continue
        stripped = line.strip()
        if bracket_depth == 0 and not _LANDINGPAD_CLAUSE.match(stripped):
            count += 1
        # Brackets inside strings (inline asm text) do not open a switch's case list.
        bare = _QUOTED.sub('""', stripped)
        bracket_depth += bare.count("[") - bare.count("]")
        if bracket_depth < 0:
            bracket_depth = 0
    return count


def _strip_comment(line: str) -> str:
    """The line without a trailing `; comment`, ignoring ';' inside quoted strings."""
    in_str = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_str = not in_str
        elif ch == ";" and not in_str:
            return line[:i]
    return line


def _opt(args: list[str], ir_path: Path, cwd: Path, timeout: float) -> str:
    """Run opt on a file and return the textual IR; ToolError carries opt's message."""
    out = cwd / "opt-out.ll"
    res = run_tool(["opt", *args, "-S", str(ir_path), "-o", str(out)], cwd=cwd, timeout=timeout)
    if res.timed_out:
        raise ToolError("opt", f"opt timed out after {timeout:g} s")
    if res.returncode != 0:
        raise ToolError("opt", trim_message(res.stderr) or f"opt failed ({res.describe()})")
    return out.read_text(encoding="utf-8", errors="replace")


def _object_sizes(ir_path: Path, cwd: Path, timeout: float) -> dict[str, int]:
    obj = cwd / (ir_path.stem + ".o")
    res = run_tool(["llc", "-filetype=obj", str(ir_path), "-o", str(obj)], cwd=cwd, timeout=timeout)
    if not res.ok:
        raise ToolError("llc", trim_message(res.stderr) or f"llc failed ({res.describe()})")
    res = run_tool(["llvm-size", "--format=berkeley", str(obj)], cwd=cwd, timeout=timeout)
    if not res.ok:
        raise ToolError("llvm-size", trim_message(res.stderr) or "llvm-size failed")
    # "   text    data     bss     dec     hex filename" then one line of numbers.
    lines = [ln.split() for ln in res.stdout.strip().splitlines()]
    if len(lines) < 2 or len(lines[1]) < 3 or not lines[1][0].isdigit():
        raise ToolError("llvm-size", f"unexpected llvm-size output: {res.stdout!r}")
    text, data, bss = (int(x) for x in lines[1][:3])
    return {"object_size": text, "data_size": data, "bss_size": bss}


def _stats_of_file(ir_path: Path, cwd: Path, timeout: float) -> dict[str, int]:
    # Round-trip through opt (no passes) so the count is over opt's canonical printing and
    # invalid IR is reported in opt's words before llc sees it.
    text = _opt(["-passes=verify"], ir_path, cwd, timeout)
    return {"instructions": count_ir_instructions(text), **_object_sizes(ir_path, cwd, timeout)}


def ir_stats(ir: str, *, timeout: float = 60) -> dict:
    """{"instructions", "object_size"} (plus "data_size", "bss_size") of an IR module.

    instructions: IR instructions in defined functions; object_size: text size that
    llvm-size reports for the object `llc -filetype=obj` makes. Raises MissingTool when
    opt/llc/llvm-size is absent and ToolError (a ValueError) with the tool's message when
    the IR is invalid, or UnsafeInput (a ValueError) when its assembly would read a file.
    """
    check_source(ir, "ir", "the IR")
    with workdir() as d:
        path = d / "input.ll"
        path.write_text(ir, encoding="utf-8")
        return _stats_of_file(path, d, timeout)


def verify_pass_list(
    ir: str,
    passes: str | list[str],
    *,
    timeout: float = 60,
    predicted_instructions: int | None = None,
    predicted_size: int | None = None,
) -> Verification:
    """Run a predicted pass pipeline on `ir` with opt and measure it against -Oz.

    "verified": opt accepted the pipeline and its output passes `opt -passes=verify`;
    "failed": the pipeline is malformed or opt/llc rejected it (message: the tool's words),
    or the input IR itself is invalid; "unverified": opt, llc or llvm-size is missing
    (named in `tool`). A verified answer whose predictions (instruction count, object
    size) do not match the measurement stays verified, with the mismatch in `message` so
    the caller can feed it back to the model.

    details: passes, instructions, object_size, oz_instructions, oz_object_size,
    input_instructions, input_object_size, better_than_oz (object size <= -Oz's), chosen
    ("model" or "-Oz"), optimized_ir (the chosen IR), and predicted_* / *_match when given.
    Should the -Oz baseline itself fail, oz_* are None, oz_error says why and the model's
    result is chosen.
    """
    check_source(ir, "ir", "the IR")
    details: dict = {}
    try:
        normalized = normalize_passes(passes)
    except ValueError as e:
        return Verification("failed", f"invalid pass list: {e}", tool="opt", details=details)
    details["passes"] = normalized

    try:
        with workdir() as d:
            failure = _measure(ir, normalized, d, timeout, details)
            if failure is not None:
                return failure
    except MissingTool as e:
        return missing_tool_verdict(e, details)

    notes = _prediction_notes(predicted_instructions, predicted_size, details)
    summary = (
        f"opt -passes={normalized}: {details['instructions']} instructions, "
        f"object size {details['object_size']} (-Oz: {details['oz_instructions']}, "
        f"{details['oz_object_size']}); chosen: {details['chosen']}"
    )
    if "oz_error" in details:
        notes.append(f"the -Oz baseline failed: {details['oz_error']}")
    if "optnone" in ir:
        notes.append("the input IR has optnone functions, which opt leaves unoptimized")
    message = summary + ("; " + "; ".join(notes) if notes else "")
    return Verification("verified", message, tool="opt", details=details)


def _optimize(passes: str, src: Path, out_name: str, cwd: Path, timeout: float) -> tuple[str, dict]:
    """Run `opt -passes=<passes>` on src, keep its output as out_name and measure it.

    Returns:
        (the optimized IR, its _stats_of_file); ToolError when opt or llc rejects it.
    """
    text = _opt([f"-passes={passes}"], src, cwd, timeout)
    path = cwd / out_name
    path.write_text(text, encoding="utf-8")
    return text, _stats_of_file(path, cwd, timeout)


def _measure(
    ir: str, normalized: str, d: Path, timeout: float, details: dict
) -> Verification | None:
    """Measure the input IR, its -Oz build and the model's pipeline in the work directory
    `d`, and choose between -Oz and the model; everything measured goes in details.

    Returns:
        The "failed" verdict when the input IR is invalid or opt/llc rejects the model's
        pipeline; None when the pipeline was measured.
    """
    src = d / "input.ll"
    src.write_text(ir, encoding="utf-8")
    try:
        base = _stats_of_file(src, d, timeout)
    except ToolError as e:
        return Verification("failed", f"input IR is invalid: {e}", tool=e.tool, details=details)
    details["input_instructions"] = base["instructions"]
    details["input_object_size"] = base["object_size"]

    oz_ir, oz = _oz_baseline(src, d, timeout, details)
    try:
        model_ir, model = _optimize(normalized, src, "model.ll", d, timeout)
    except ToolError as e:
        details["chosen"] = "-Oz" if oz_ir is not None else None
        details["optimized_ir"] = oz_ir
        return Verification("failed", str(e), tool=e.tool, details=details)

    details["instructions"] = model["instructions"]
    details["object_size"] = model["object_size"]
    oz_size = oz["object_size"]
    better = oz_size is None or model["object_size"] <= oz_size
    details["better_than_oz"] = better if oz_size is not None else None
    details["chosen"] = "model" if better else "-Oz"
    details["optimized_ir"] = model_ir if better else oz_ir
    return None


def _oz_baseline(
    src: Path, d: Path, timeout: float, details: dict
) -> tuple[str | None, dict[str, int | None]]:
    """The -Oz build of src, recorded in details (oz_instructions, oz_object_size, and
    oz_error when LLVM fails on it).

    Should LLVM itself fail on it, the model's answer can still be judged on its own;
    there is just nothing to fall back to.

    Returns:
        (the -Oz IR, or None when it failed; its stats, with None values when it failed).
    """
    oz_ir: str | None = None
    oz: dict[str, int | None] = {"instructions": None, "object_size": None}
    try:
        oz_ir, stats = _optimize("default<Oz>", src, "oz.ll", d, timeout)
        oz = dict(stats)
    except ToolError as e:
        oz_ir = None
        details["oz_error"] = str(e)
    details["oz_instructions"] = oz["instructions"]
    details["oz_object_size"] = oz["object_size"]
    return oz_ir, oz


def _prediction_notes(
    predicted_instructions: int | None, predicted_size: int | None, details: dict
) -> list[str]:
    """Check the model's predicted instruction count and object size, when given, against
    what was measured, recording predicted_* and *_match in details.

    Returns:
        One note for each prediction that does not match, in that order.
    """
    notes = []
    if predicted_instructions is not None:
        match = predicted_instructions == details["instructions"]
        details["predicted_instructions"] = predicted_instructions
        details["instructions_match"] = match
        if not match:
            notes.append(
                f"predicted instruction count {predicted_instructions} but opt's output has "
                f"{details['instructions']}"
            )
    if predicted_size is not None:
        match = predicted_size == details["object_size"]
        details["predicted_size"] = predicted_size
        details["size_match"] = match
        if not match:
            notes.append(
                f"predicted object size {predicted_size} but llvm-size measured "
                f"{details['object_size']}"
            )
    return notes
