"""The worked examples of docs/tasks/*.md show what the tools really produce.

The inputs are rebuilt here with clang, gcc and objdump called directly (the decompiler
listing cleaned by the steps LLM4Decompile's README publishes, written out here), and must
appear verbatim in the pages. Compiler versions other than the documented ones (Debian
clang 14, GCC 12.2, binutils 2.40) may print differently: then the test is skipped unless
LUTLM_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from lutlm.engine.outputs import CompletionOutput, RequestOutput

from .test_tasks_e2e import CHECK_DRIVER, PRINT_DRIVER, SUM_TO, require_tools

DOCS = Path(__file__).resolve().parent.parent / "docs" / "tasks"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def build(tmp: Path, argv: list[str], out: str) -> Path:
    (tmp / "sum.c").write_text(SUM_TO)
    subprocess.run([*argv, "sum.c", "-o", out], cwd=tmp, check=True, capture_output=True)
    return tmp / out


def require_version(argv: list[str], expected: str) -> None:
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    if expected not in out:
        msg = f"the docs show {expected} output; this machine has {out.splitlines()[0]}"
        if os.environ.get("LUTLM_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def test_optimize_ir_page_shows_clangs_ir(tmp_path):
    require_tools("clang")
    require_version(["clang", "--version"], "clang version 14.")
    ir = build(
        tmp_path, ["clang", "-S", "-emit-llvm", "-O0", "-Xclang", "-disable-O0-optnone"], "s.ll"
    )
    doc = page("optimize-ir.md")
    assert ir.read_text() in doc  # the whole module: header, attributes, metadata
    assert SUM_TO in doc


def test_decompile_page_shows_the_cleaned_objdump_listing(tmp_path):
    require_tools("gcc", "objdump")
    require_version(["gcc", "--version"], "12.2.0")
    obj = build(tmp_path, ["gcc", "-O0", "-c"], "sum.o")
    listing = subprocess.run(["objdump", "-d", str(obj)], capture_output=True, text=True).stdout
    block = "<sum_to>:" + listing.split("<sum_to>:")[-1].split("\n\n")[0]
    cleaned = []
    for line in block.split("\n"):  # the README's steps: drop address and bytes, comments
        fields = line.split("\t")
        if len(fields) < 3 and "00" in line:
            continue
        text = "\t".join(fields[min(len(fields) - 1, 2) :]).split("#")[0].strip()
        cleaned.append(text)
    prompt = "# This is the assembly code:\n" + "\n".join(cleaned).strip()
    prompt += "\n# What is the source code?\n"
    doc = page("decompile.md")
    assert prompt in doc
    assert CHECK_DRIVER.strip() in doc


def test_transpile_page_shows_gccs_assembly(tmp_path):
    require_tools("gcc")
    require_version(["gcc", "--version"], "12.2.0")
    asm = build(tmp_path, ["gcc", "-S", "-O0"], "sum.s").read_text()
    doc = page("transpile.md")
    assert asm in doc
    assert PRINT_DRIVER in doc


# -- every snippet of the pages runs, every example is valid ---------------------------------

FENCE = re.compile(r"^(`{3,})([\w+-]*)\n(.*?)^\1$", re.S | re.M)
PAGES = ("optimize-ir.md", "decompile.md", "transpile.md")
# The answer the optimize-ir page's report is for (the page wraps it over two lines).
PASS_LIST_ANSWER = (
    "Run passes `-sroa -instcombine -simplifycfg` to get instruction count 7 and binary "
    "size 24 bytes."
)


def blocks(name: str, language: str) -> list[str]:
    """The fenced blocks of a page in `language` ("" for unmarked ones)."""
    return [m.group(3) for m in FENCE.finditer(page(name)) if m.group(2) == language]


def the_block(name: str, language: str) -> str:
    found = blocks(name, language)
    assert len(found) == 1, f"{name}: expected one {language} block, found {len(found)}"
    return found[0]


class Answers:
    """lutlm.LLM as the snippets use it: every sample is one scripted answer."""

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, prompts, params=None):
        return self._answer(prompts[0], params)

    def chat(self, messages, params=None):
        return self._answer(json.dumps(messages), params)

    def _answer(self, prompt: str, params) -> list[RequestOutput]:
        outs = [CompletionOutput(i, self.text, [], "stop") for i in range(params.n)]
        return [RequestOutput("docs", prompt, [1, 2, 3], outs)]


def inputs(name: str, tmp: Path) -> None:
    """The files a page's snippet opens, made as the page's worked example says."""
    if name == "optimize-ir.md":
        (tmp / "sum.ll").write_text(the_block(name, "llvm"))
    elif name == "decompile.md":
        build(tmp, ["gcc", "-O0", "-c"], "sum.o")
        (tmp / "check.c").write_text(CHECK_DRIVER)
    else:
        (tmp / "sum.s").write_text(the_block(name, "asm"))
        (tmp / "tests").mkdir()
        (tmp / "tests" / "print.c").write_text(PRINT_DRIVER)


def good_and_bad_answers(name: str, tmp: Path) -> tuple[str, str]:
    if name == "optimize-ir.md":
        require_tools("opt", "llc", "llvm-size")
        return PASS_LIST_ANSWER, "Run passes `-no-such-pass` to get instruction count 1"
    if name == "decompile.md":
        require_tools("gcc", "objdump")
        return SUM_TO, SUM_TO.replace("return s;", "return s + 1;")
    require_tools("gcc", "aarch64-linux-gnu-gcc", "qemu-aarch64")
    good = build(tmp, ["aarch64-linux-gnu-gcc", "-S", "-O0"], "sum_aarch64.s").read_text()
    return f"```armasm\n{good}```\n", "```armasm\n\tnot_an_instruction x0\n```\n"


@pytest.mark.parametrize("name", PAGES)
def test_python_snippets_run(name, tmp_path, monkeypatch, capsys):
    """Each page's Python runs as written (a scripted model in place of the real one), on
    a good answer (verified) and a bad one (failed: no exception on a failed result)."""
    import lutlm

    snippets = blocks(name, "python")
    assert snippets, f"{name} has no Python snippet"
    good, bad = good_and_bad_answers(name, tmp_path)
    inputs(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    for answer, status in ((good, "verified"), (bad, "failed")):
        monkeypatch.setattr(lutlm, "LLM", lambda *args, answer=answer, **kw: Answers(answer))
        for code in snippets:
            exec(compile(code, f"docs/tasks/{name}", "exec"), {})
            printed = capsys.readouterr().out
            assert printed.startswith(status), f"{name}: {printed[:500]}"


def test_optimize_ir_example_is_a_valid_module_and_its_report_is_real():
    """The page's IR parses as a whole module, and the page's report is what the verifier
    says about PASS_LIST_ANSWER on it (LLVM 14's sizes)."""
    from lutlm.tasks.optimize_ir import optimize_ir

    require_tools("llvm-as", "opt", "llc", "llvm-size")
    ir = the_block("optimize-ir.md", "llvm")
    res = subprocess.run(
        ["llvm-as", "-", "-o", os.devnull], input=ir, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert PASS_LIST_ANSWER in " ".join(page("optimize-ir.md").split())
    require_version(["opt", "--version"], "LLVM version 14.")
    result = optimize_ir(Answers(PASS_LIST_ANSWER), ir)
    report = result.verification.to_dict()
    report["details"]["optimized_ir"] = "..."  # shortened on the page
    assert report == json.loads(the_block("optimize-ir.md", "json"))


def test_decompile_report_is_real(tmp_path, monkeypatch):
    from lutlm.tasks.decompile import decompile

    require_tools("gcc", "objdump")
    inputs("decompile.md", tmp_path)
    monkeypatch.chdir(tmp_path)
    result = decompile(Answers(SUM_TO), binary="sum.o", function="sum_to", tests=["check.c"])
    assert result.verification.to_dict() == json.loads(the_block("decompile.md", "json"))
    bad = SUM_TO.replace("return s;", "return s + 1;")
    off = decompile(Answers(bad), binary="sum.o", function="sum_to", tests=["check.c"])
    assert off.status == "failed" and "check.c" in off.verification.message  # as the page says


def test_transpile_report_is_real(tmp_path, monkeypatch):
    from lutlm.tasks.transpile import transpile

    require_tools("gcc", "aarch64-linux-gnu-gcc", "qemu-aarch64", "arm-linux-gnueabi-gcc")
    good, _ = good_and_bad_answers("transpile.md", tmp_path)
    inputs("transpile.md", tmp_path)
    monkeypatch.chdir(tmp_path)
    asm = (tmp_path / "sum.s").read_text()
    result = transpile(Answers(good), asm, "aarch64", tests="tests/", preset="gg")
    assert result.verification.to_dict() == json.loads(the_block("transpile.md", "json"))
    armv5 = transpile(Answers(good), asm, "armv5", tests="tests/", preset="gg")
    message = armv5.verification.message
    assert armv5.status == "failed" and "ARM register expected" in message  # as the page says
    assert "str w0,[sp,12]" in message


@pytest.mark.parametrize("name", PAGES)
def test_c_and_assembly_examples_compile(name, tmp_path):
    require_tools("gcc")
    for i, code in enumerate(blocks(name, "c")):
        src = tmp_path / f"example{i}.c"
        src.write_text(code)
        res = subprocess.run(["gcc", "-fsyntax-only", str(src)], capture_output=True, text=True)
        assert res.returncode == 0, f"{name}:\n{code}\n{res.stderr}"
    for i, code in enumerate(blocks(name, "asm")):
        src = tmp_path / f"example{i}.s"
        src.write_text(code)
        argv = ["gcc", "-c", str(src), "-o", str(tmp_path / f"example{i}.o")]
        res = subprocess.run(argv, capture_output=True, text=True)
        assert res.returncode == 0, f"{name}:\n{res.stderr}"
    for code in blocks(name, "json"):
        json.loads(code)


@pytest.mark.parametrize("name", PAGES)
def test_command_lines_parse(name):
    """Every `lutlm ...` line of the pages is a command line the CLI accepts."""
    from lutlm.cli import build_parser

    lines = [
        line
        for block in blocks(name, "")
        for line in block.splitlines()
        if line.startswith("lutlm ")
    ]
    assert lines, f"{name} shows no command line"
    for line in lines:
        argv = [a if a != "..." else "model.gguf" for a in shlex.split(line, comments=True)]
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: the CLI rejects {line!r}")
        assert args.command == name.removesuffix(".md")
