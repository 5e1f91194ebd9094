"""The worked examples of docs/tasks/*.md show what the tools really produce.

The inputs are rebuilt here with clang, gcc and objdump called directly (the decompiler
listing cleaned by the steps LLM4Decompile's README publishes, written out here), and must
appear verbatim in the pages. Compiler versions other than the documented ones (Debian
clang 14, GCC 12.2, binutils 2.40) may print differently: then the test is skipped unless
LUTLM_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

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
    text = ir.read_text()
    function = re.search(r"^define .*?^}\n", text, re.S | re.M).group(0)
    doc = page("optimize-ir.md")
    assert function in doc
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
