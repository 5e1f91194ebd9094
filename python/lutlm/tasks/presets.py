"""Prompt presets for the compiler-task models: each model family's prompt exactly as it was
trained, its stop strings, default generation settings and answer extractor.

The templates are typed from the models' own documentation; each preset names its sources.
A model answers well only to the prompt it was fine-tuned on, to the character: the
blank lines, the `<code>` tags, the fences and (for CRT) a begin-of-sentence token written
into the text all matter.

- llm-compiler: facebook/llm-compiler-{7b,13b}-ftd (Code Llama architecture). The optimize,
  disassemble and emulate prompts are the ones of the model card's demo script
  (llm_compiler_demo.py on the Hugging Face model page); Cummins et al., "Meta Large Language
  Model Compiler: Foundation Models of Compiler Optimization", arXiv:2407.02524.
- llm4decompile: LLM4Binary/llm4decompile-*-v2 (DeepSeek-Coder / Yi-Coder base, Llama
  architecture with linear rope scaling); the prompt and the objdump clean-up (addresses,
  hex bytes and comments removed) of the LLM4Decompile README (github.com/albertan017/
  LLM4Decompile); Tan et al., "LLM4Decompile", arXiv:2403.05286.
- crt: ahmedheakl/asm2asm-deepseek1.3b-* (DeepSeek-Coder 1.3B, extended vocabulary); the
  instruction template of the CRT repository's README and inference.py (github.com/
  ahmedheakl/asm2asm), Intel-syntax x86 input; Heakl et al., "From CISC to RISC:
  language-model guided assembly transpilation", arXiv:2411.16341.
- gg: ahmedheakl/gg-* (Qwen2.5-Coder 1.5B); the chat prompt of the Guaranteed-Guess
  repository's inference.py (github.com/ahmedheakl/Guaranteed-Guess), AT&T-syntax input,
  the answer in a ```armasm block; Heakl et al., "Guaranteed Guess", arXiv:2506.14606.
- superopt: Qwen2.5-Coder-7B assembly superoptimizers (LLM4Code/Superoptimizer_Qwen7B);
  the C-code-plus-assembly prompt of Wei et al., "SuperCoder: Assembly Program
  Superoptimization with Large Language Models", arXiv:2505.11480 (the `question` field of
  its llm_superoptimizer_ds data set), answer in a ```assembly block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lutlm.engine.sampling_params import SamplingParams

__all__ = [
    "Extracted",
    "Preset",
    "PRESETS",
    "get_preset",
    "presets_for",
    "CRT_BOS",
    "extract_pass_list",
    "extract_c",
    "extract_fenced",
    "extract_code_tags",
    "extract_crt",
]

# The DeepSeek-Coder begin-of-sentence token as text. CRT's template writes it into the
# prompt and the tokenizer adds its own BOS too: the models were trained on two BOS tokens,
# so the literal must reach the model as the special token's id, not as characters.
CRT_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"

# Draft tokens per step for prompt-lookup decoding: these answers copy long spans of their
# prompt (the input assembly or IR, renamed a little), which is where drafting pays.
PROMPT_LOOKUP = 8


@dataclass
class Extracted:
    """What an extractor found in a model's answer.

    answer is the part a verifier checks (a pass list, C source, assembly) or None when the
    answer holds none; fields holds the rest (predicted counts, the optimized IR).
    """

    answer: str | None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """One model family's prompt, stop strings, generation defaults and extractor.

    template is a str.format template over named fields (`ir`, `asm`, `c_code`, ...). When
    chat is true it is the user message, wrapped by the model's own chat template; else it
    is the whole prompt, encoded with the tokenizer's BOS (add_special_tokens) as the models
    were trained.
    """

    name: str
    task: str  # "optimize-ir", "decompile", "transpile", "disassemble", "emulate"
    models: str  # the checkpoints it is for, in words
    architecture: str  # lutlm family the checkpoints load as
    template: str
    extractor: Callable[[str], Extracted]
    chat: bool = False
    stop: tuple[str, ...] = ()
    max_tokens: int = 2048
    input_syntax: str | None = None  # "att" or "intel" for assembly inputs
    targets: tuple[str, ...] = ()  # transpile targets the preset's models produce
    target_names: dict[str, str] = field(default_factory=dict)  # target -> name in prompt
    sources: tuple[str, ...] = ()

    def fields(self) -> list[str]:
        """The template's field names."""
        return sorted({m for m in re.findall(r"(?<!\{)\{(\w+)\}", self.template)})

    def format(self, **values: Any) -> str:
        """The template filled in; a missing field is a ValueError naming it."""
        missing = [f for f in self.fields() if f not in values]
        if missing:
            raise ValueError(f"preset {self.name!r} needs {', '.join(missing)}")
        return self.template.format(**values)

    def prompt(self, tokenizer: Any = None, **values: Any) -> str:
        """The full prompt text. Chat presets need the model's tokenizer (its template)."""
        text = self.format(**values)
        if not self.chat:
            return text
        if tokenizer is None:
            raise ValueError(f"preset {self.name!r} is a chat prompt: pass the tokenizer")
        return tokenizer.apply_chat_template(self.messages(**values), add_generation_prompt=True)

    def messages(self, **values: Any) -> list[dict[str, str]]:
        """The conversation of a chat preset (one user message)."""
        return [{"role": "user", "content": self.format(**values)}]

    def sampling_params(self, **overrides: Any) -> SamplingParams:
        """The preset's defaults: greedy, its stop strings and length, prompt lookup on;
        keyword arguments override any SamplingParams field."""
        values: dict[str, Any] = {
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "prompt_lookup": PROMPT_LOOKUP,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**values)

    def extract(self, text: str) -> Extracted:
        return self.extractor(text)

    def target_name(self, target: str) -> str:
        if self.targets and target not in self.targets:
            raise ValueError(
                f"preset {self.name!r} transpiles to {', '.join(self.targets)}, not {target!r}"
            )
        return self.target_names.get(target, target)


# ------------------------------------------------------------------------- extractors

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_fenced(text: str, languages: tuple[str, ...] = ()) -> str | None:
    """The body of the first ```lang block whose language is one of `languages` (any block
    when empty; then a block with no language counts too). An unclosed block runs to the end
    (a stop string or max_tokens may cut the closing fence)."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    for lang, body in blocks:
        if not languages or lang in languages:
            return body.strip("\n")
    return None


def extract_code_tags(text: str) -> str | None:
    """The text inside the first <code>...</code> (LLM Compiler's answers), else None."""
    m = re.search(r"<code>(.*?)(?:</code>|\Z)", text, re.S)
    return m.group(1).strip("\n") if m else None


_PASSES_LEAD = re.compile(r"run\s+passes\s*", re.I)
_INSTRUCTIONS = re.compile(r"instruction\s+count\s+(?:(?:of|from)\s+\d+\s+to\s+)?(\d+)", re.I)
_SIZE = re.compile(r"binary\s+size\s+(?:(?:of|from)\s+\d+\s+to\s+)?(\d+)", re.I)


def extract_pass_list(text: str) -> Extracted:
    """The pass list and predicted counts of an LLM Compiler FTD optimization answer.

    The fine-tuned answer starts "Run passes <list> to ...", the list in backticks or bare
    (`-pass1 -pass2` legacy flags or a `module(...)` pipeline), followed by the predicted
    instruction count and binary size of the optimized code; both phrasings "count N" and
    "count from M to N" are read (N is the prediction). A lone pipeline string (what a user
    might paste) is accepted too.
    """
    body = text.split("<code>", 1)[0]
    passes = None
    m = _PASSES_LEAD.search(body)
    if m:
        rest = body[m.end() :]
        tick = re.match(r"`([^`]*)`", rest)
        if tick:
            passes = tick.group(1)
        else:  # bare: up to " to <words>" or the end of the sentence
            bare = re.match(r"(.*?)(?:\s+to\s+[a-z]|[:\n]|$)", rest, re.S)
            passes = bare.group(1) if bare else rest
    else:  # a bare list: legacy flags, or one new-PM pipeline string
        stripped = body.strip().strip("`").strip()
        tokens = stripped.split()
        if tokens and all(t.startswith("-") for t in tokens):
            passes = stripped
        elif len(tokens) == 1 and re.fullmatch(r"[\w<>(),\-=;.]+", stripped):
            passes = stripped if re.search(r"[,(<]", stripped) else None
    # A sentence's full stop or comma is not part of the last pass name.
    passes = passes.strip().rstrip(".,;") if passes else None
    fields: dict[str, Any] = {}
    if (i := _INSTRUCTIONS.search(body)) is not None:
        fields["predicted_instructions"] = int(i.group(1))
    if (s := _SIZE.search(body)) is not None:
        fields["predicted_size"] = int(s.group(1))
    code = extract_code_tags(text)
    if code is not None:
        fields["predicted_ir"] = code
    return Extracted(passes or None, fields)


def extract_c(text: str) -> Extracted:
    """C source from a decompiler answer: a ```c block if the model wrote one, else the whole
    text (LLM4Decompile answers with bare C, ended by EOS)."""
    body = extract_fenced(text, ("c", "cpp", "c++"))
    if body is None:
        body = text
    body = body.strip()
    return Extracted(body or None)


def extract_crt(text: str) -> Extracted:
    """CRT answers the assembly then closes the ```asm block its prompt opened."""
    body = text.split("```", 1)[0].strip("\n")
    return Extracted(body if body.strip() else None)


def _fenced(*languages: str) -> Callable[[str], Extracted]:
    def extract(text: str) -> Extracted:
        body = extract_fenced(text, languages)
        if body is None:
            body = extract_fenced(text)
        return Extracted(body if body and body.strip() else None)

    extract.__doc__ = f"The code of the answer's ```{languages[0]} block (else its first block)."
    return extract


def _ir(text: str) -> Extracted:
    body = extract_code_tags(text)
    if body is None:
        body = text.strip()
    return Extracted(body or None)


# ------------------------------------------------------------------------- the presets

_LLM_COMPILER_SOURCES = (
    "facebook/llm-compiler-7b-ftd model card and its llm_compiler_demo.py (Hugging Face)",
    "Cummins et al., Meta Large Language Model Compiler, arXiv:2407.02524",
)
_LLM_COMPILER_MODELS = "facebook/llm-compiler-7b-ftd, facebook/llm-compiler-13b-ftd"
_EMULATE_TAIL = (
    "<code>{ir}</code>\n\nThe input code has instruction count {ir_count} and binary size "
    "{bin_size} bytes. [/INST]"
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="llm-compiler",
            task="optimize-ir",
            models=_LLM_COMPILER_MODELS,
            architecture="llama (Code Llama)",
            template=(
                "[INST] Tell me how to optimize this LLVM-IR for object file size:\n\n"
                "<code>{ir}</code> [/INST]"
            ),
            extractor=extract_pass_list,
            # The pass list and counts come before the optimized IR; only they are used
            # (the paper deploys the pass list alone), so generation stops at the IR.
            stop=("<code>",),
            max_tokens=512,
            sources=_LLM_COMPILER_SOURCES,
        ),
        Preset(
            name="llm-compiler-disassemble",
            task="disassemble",
            models=_LLM_COMPILER_MODELS,
            architecture="llama (Code Llama)",
            template="[INST] Disassemble this code to LLVM-IR:\n\n<code>{asm}</code> [/INST]",
            extractor=_ir,
            stop=("</code>",),
            max_tokens=4096,
            input_syntax="att",
            sources=_LLM_COMPILER_SOURCES,
        ),
        Preset(
            name="llm-compiler-emulate",
            task="emulate",
            models="facebook/llm-compiler-7b, facebook/llm-compiler-13b (and -ftd)",
            architecture="llama (Code Llama)",
            template=(
                "[INST] Give the LLVM-IR for the following code when optimized using "
                "opt -p '{passes}':\n\n" + _EMULATE_TAIL
            ),
            extractor=_ir,
            stop=("</code>",),
            max_tokens=4096,
            sources=_LLM_COMPILER_SOURCES,
        ),
        Preset(
            name="llm-compiler-emulate-asm",
            task="emulate",
            models="facebook/llm-compiler-7b, facebook/llm-compiler-13b (and -ftd)",
            architecture="llama (Code Llama)",
            template=(
                "[INST] Give the assembly for the following code when optimized using "
                "opt -p '{passes}':\n\n" + _EMULATE_TAIL
            ),
            extractor=_ir,
            stop=("</code>",),
            max_tokens=4096,
            sources=_LLM_COMPILER_SOURCES,
        ),
        Preset(
            name="llm4decompile",
            task="decompile",
            models="LLM4Binary/llm4decompile-1.3b-v2, -6.7b-v2, -9b-v2, -22b-v2",
            architecture="llama (DeepSeek-Coder / Yi-Coder, linear rope scaling)",
            template="# This is the assembly code:\n{asm}\n# What is the source code?\n",
            extractor=extract_c,
            max_tokens=2048,
            input_syntax="att",
            sources=(
                "LLM4Decompile README (github.com/albertan017/LLM4Decompile)",
                "Tan et al., LLM4Decompile, arXiv:2403.05286",
            ),
        ),
        Preset(
            name="crt",
            task="transpile",
            models="ahmedheakl/asm2asm-deepseek1.3b-xtokenizer-arm, -armv8, -risc",
            architecture="llama (DeepSeek-Coder 1.3B, extended vocabulary)",
            template=(
                CRT_BOS + "You are a helpful coding assistant assistant on converting from x86 "
                "to {target_name} assembly.\n### Instruction:\nConvert this x86 assembly into "
                "{target_name}\n```asm\n{asm}\n```\n### Response:\n```asm\n\n"
            ),
            extractor=extract_crt,
            stop=("```",),
            max_tokens=4096,
            input_syntax="intel",
            targets=("armv5", "aarch64", "riscv64"),
            # The published template names ARM; the RISC-V model's card shows no prompt, so
            # "RISCv64" (the papers' spelling of the target) is lutlm's assumption.
            target_names={"armv5": "ARM", "aarch64": "ARM", "riscv64": "RISCv64"},
            sources=(
                "CRT README and inference.py (github.com/ahmedheakl/asm2asm)",
                "Heakl et al., From CISC to RISC, arXiv:2411.16341",
            ),
        ),
        Preset(
            name="gg",
            task="transpile",
            models="ahmedheakl/gg-armv5-O0, -armv8-O0, -armv8-O2, -risc-O0",
            architecture="qwen2 (Qwen2.5-Coder 1.5B)",
            template=(
                "Convert the following x86 assembly code to {target_name} assembly:\n"
                "```x86asm\n{asm}\n```"
            ),
            extractor=_fenced("armasm", "asm", "riscvasm", "assembly"),
            chat=True,
            max_tokens=8192,
            input_syntax="att",
            targets=("armv5", "aarch64", "riscv64"),
            # As for crt: ARM is the published wording, RISC-V lutlm's assumption.
            target_names={"armv5": "ARM", "aarch64": "ARM", "riscv64": "RISC-V"},
            sources=(
                "Guaranteed-Guess inference.py (github.com/ahmedheakl/Guaranteed-Guess)",
                "Heakl et al., Guaranteed Guess, arXiv:2506.14606",
            ),
        ),
        Preset(
            name="superopt",
            task="transpile",
            models="LLM4Code/Superoptimizer_Qwen7B (Qwen2.5-Coder-7B-Instruct)",
            architecture="qwen2 (Qwen2.5-Coder 7B)",
            template=(
                "Given the following C code and assembly code, your task is to generate "
                "highly optimized x86-64 assembly code.\nC Code:\n\n```c\n{c_code}\n```\n\n"
                "Assembly Code:\n\n```assembly\n{asm}\n```\n\nOnly output the optimized "
                "assembly code. Do not include any other text. Do not write any comments in "
                "the assembly code. Wrap the assembly code in ```assembly``` tags.\n"
                "Optimized Assembly Code:\n"
            ),
            extractor=_fenced("assembly", "asm", "x86asm", "s"),
            chat=True,
            max_tokens=4096,
            input_syntax="att",
            targets=("x86_64",),
            sources=("Wei et al., SuperCoder, arXiv:2505.11480 (prompt of Appendix A.3)",),
        ),
    )
}


def get_preset(name: str, task: str | None = None) -> Preset:
    """The preset called `name`; ValueError naming the choices when there is none, or when
    it belongs to another task."""
    preset = PRESETS.get(name)
    if preset is None:
        choices = presets_for(task) if task else list(PRESETS)
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(choices)}")
    if task is not None and preset.task != task:
        raise ValueError(
            f"preset {name!r} is for {preset.task}, not {task}; presets for {task}: "
            f"{', '.join(presets_for(task))}"
        )
    return preset


def presets_for(task: str) -> list[str]:
    """Names of the presets of one task."""
    return [name for name, p in PRESETS.items() if p.task == task]
