"""The README's examples work as written: its command lines are ones the CLI accepts, and
its self-contained Python snippets run and print what the README says they print."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from .model_assets import smollm2_path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(README) if m.group(1) == language]


def command_lines() -> list[str]:
    """`lutlm ...` lines of the bash blocks, continuations joined; lines in usage notation
    ([optional], a|b) are descriptions, not commands."""
    lines = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("lutlm") and not re.search(r"[\[|]", part.split("#")[0]):
                    lines.append(part)
    return lines


def test_readme_command_lines_parse():
    from lutlm.cli import build_parser

    lines = command_lines()
    assert "lutlm quantize smollm2/" in " ".join(lines)
    for line in lines:
        argv = shlex.split(line, comments=True)
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"the CLI rejects the README's {line!r}")


def snippet(starts: str) -> str:
    found = [b for b in blocks("python") if starts in b]
    assert len(found) == 1, starts
    return found[0]


def test_kernels_snippet_runs():
    ns: dict = {}
    exec(snippet("from lutlm.quant import"), ns)
    assert ns["y"].shape == (1, 2560)


def test_generating_text_snippet_prints_what_the_readme_says(capsys):
    smollm2_path()
    code = snippet("from lutlm import LLM, SamplingParams")
    exec(code, {})
    printed = capsys.readouterr().out
    claimed = re.search(r"# (The capital of France is Paris\.)", code).group(1)
    assert printed.splitlines()[0] == claimed
