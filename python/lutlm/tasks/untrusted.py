"""What user and model text may ask of a tool before it reaches one.

The sandbox (lutlm.tasks.sandbox) already hides the server's files from every tool, but
the toolchain itself stays visible, and a tool that pastes a file it read into its output
or its diagnostics would put bytes in a response that neither the user sent nor the model
wrote. So text bound for a tool is checked first, and refused with a message naming the
directive:

- assembly (and LLVM IR, whose `module asm` and inline asm reach the assembler, and C,
  whose `asm(...)` statements do): `.include` and `.incbin` read files;
- C: `#include` and `#embed` may name only a header by a plain relative name, as
  `<stdio.h>` or `"util.h"`: no absolute path, no `..`, no macro-computed name.

A directive cannot be hidden by spelling: C is checked as the preprocessor sees it
(backslash-newline splices joined, `%:` read as `#`), and the assembler directives are
also looked for with string escapes decoded (`\\2E` in IR, `\\x2e` and `\\056` in C)
and adjacent C string literals joined. That is defense in depth, not the boundary: a
program can still build a directive in ways no text check follows, which is why every
tool also runs in the sandbox.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["UnsafeInput", "check_source"]

Language = Literal["asm", "c", "ir"]


class UnsafeInput(ValueError):
    """Text for a tool contains a directive that would read a file."""


# `.include` / `.incbin` anywhere: matching more than the assembler would accept costs an
# error for a string that merely mentions the directive, never a file read.
_ASM_READ = re.compile(r"(?i)\.(incbin|include)\b")
_C_INCLUDE = re.compile(r"(?m)^[ \t]*#[ \t]*(include_next|include|import|embed)\b(.*)$")
_HEADER_NAME = re.compile(r"[ \t]*(<([^<>\"\n]*)>|\"([^\"\n]*)\")[ \t]*(//.*|/\*.*)?$")


def _as_preprocessed(text: str) -> str:
    # What the preprocessor tokenizes: spliced lines and `%:` read as `#`.
    return re.sub(r"\\\r?\n", "", text).replace("%:", "#")


def _ir_unescaped(text: str) -> str:
    return re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _c_unescaped(text: str) -> str:
    text = re.sub(r"\"\s*\"", "", text)  # "a" "b" is "ab"
    text = re.sub(r"\\x([0-9A-Fa-f]{1,2})", lambda m: chr(int(m.group(1), 16)), text)
    return re.sub(r"\\([0-7]{1,3})", lambda m: chr(int(m.group(1), 8) & 0xFF), text)


def check_source(text: str, language: Language, what: str) -> None:
    """Refuse text that would make a tool read a file.

    Args:
        text: assembly, LLVM IR or C source.
        language: "asm", "ir" or "c".
        what: how the text is named in the message ("the assembly", "test driver t.c").

    Raises:
        UnsafeInput (a ValueError) naming `what` and the directive.
    """
    if language not in ("asm", "c", "ir"):
        raise ValueError(f"unknown source language {language!r}")
    seen = _as_preprocessed(text) if language == "c" else text
    decoded = {"asm": seen, "ir": _ir_unescaped(seen), "c": _c_unescaped(seen)}[language]
    m = _ASM_READ.search(seen) or _ASM_READ.search(decoded)
    if m:
        raise UnsafeInput(
            f"{what} uses the assembler directive .{m.group(1).lower()}, which reads a file; "
            "lutlm's verifiers do not run input that reads files"
        )
    if language != "c":
        return
    for m in _C_INCLUDE.finditer(seen):
        directive, rest = m.group(1), m.group(2)
        name = _HEADER_NAME.match(rest)
        header = name and (name.group(2) if name.group(2) is not None else name.group(3))
        plain = header and not header.startswith("/") and "\\" not in header
        if directive == "embed" or not plain or ".." in header.split("/"):
            raise UnsafeInput(
                f"{what}: #{directive}{rest.rstrip()} is not allowed; lutlm's verifiers take "
                '#include with a plain relative header name only, as <stdio.h> or "util.h"'
            )
