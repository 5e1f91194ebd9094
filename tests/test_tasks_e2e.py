"""The three compiler tasks end to end, with real tools.

- A scripted generator (the LLM's generate/chat interface, fixed answers) drives each task
  through the real verifiers: opt/llc/llvm-size, gcc, the cross gcc and qemu-user really
  run, and known-good answers must verify while known-bad ones fail, best-of-n must pick
  the smallest object file and the feedback retry must recover from a bad first answer.
- Tiny random models of each preset's architecture (saved by transformers, with a
  tokenizer trained here that holds the preset's special strings) run the whole path
  through lutlm's real LLM class: the prompt tokens must be what the template says; the
  random answers must give a well-formed "failed" or "unverified" report.

Inputs and known-good answers are made here by calling the compilers directly (not
through lutlm). With LUTLM_REQUIRE_TOOLS=1 (CI) a missing tool fails the tests, else
they are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lutlm.engine.outputs import CompletionOutput, RequestOutput
from lutlm.tasks import toolchain
from lutlm.tasks.decompile import decompile
from lutlm.tasks.optimize_ir import optimize_ir
from lutlm.tasks.presets import CRT_BOS, get_preset
from lutlm.tasks.transpile import transpile

SUM_TO = """int sum_to(int n)
{
    int s = 0;
    for (int i = 1; i <= n; i++)
        s += i;
    return s;
}
"""
# Known-bad: the same function, off by one.
SUM_TO_BAD = SUM_TO.replace("return s;", "return s + 1;")
# Decompile test: main returns 0 when the function behaves.
CHECK_DRIVER = """int sum_to(int n);
int main(void) { return !(sum_to(0) == 0 && sum_to(1) == 1 && sum_to(10) == 55); }
"""
# Transpile test: prints results, compared with the x86-64 reference run.
PRINT_DRIVER = """#include <stdio.h>
int sum_to(int n);
int main(void)
{
    for (int n = 0; n < 6; n++)
        printf("%d\\n", sum_to(n));
    return 0;
}
"""

CROSS_GCC = {
    "aarch64": "aarch64-linux-gnu-gcc",
    "armv5": "arm-linux-gnueabi-gcc",
    "riscv64": "riscv64-linux-gnu-gcc",
}
QEMU = {"aarch64": "qemu-aarch64", "armv5": "qemu-arm", "riscv64": "qemu-riscv64"}


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = f"{', '.join(missing)} not installed (Debian: llvm clang gcc-*-linux-gnu* qemu-user)"
        if os.environ.get("LUTLM_REQUIRE_TOOLS") == "1":
            pytest.fail(f"LUTLM_REQUIRE_TOOLS=1 but {msg}")
        pytest.skip(msg)


def run(argv: list[str], cwd: Path) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def c_to(tmp: Path, source: str, argv: list[str], out: str) -> Path:
    (tmp / "in.c").write_text(source)
    run([*argv, "in.c", "-o", out], tmp)
    return tmp / out


def sum_to_ir(tmp: Path) -> str:
    """Unoptimized IR, as LLM Compiler's inputs are (optnone off so opt may optimize)."""
    require_tools("clang", "opt", "llc", "llvm-size")
    cmd = ["clang", "-S", "-emit-llvm", "-O0", "-Xclang", "-disable-O0-optnone"]
    return c_to(tmp, SUM_TO, cmd, "in.ll").read_text()


def asm_for(tmp: Path, source: str, compiler: str, *flags: str) -> str:
    return c_to(tmp, source, [compiler, "-S", "-O0", *flags], "out.s").read_text()


class Scripted:
    """The LLM's generate/chat API answering from a script: one list of n texts per call."""

    def __init__(self, *rounds: list[str]) -> None:
        self.rounds = list(rounds)
        self.prompts: list = []

    def _answer(self, prompt, params) -> list[RequestOutput]:
        self.prompts.append(prompt)
        texts = self.rounds.pop(0)
        assert len(texts) == params.n
        outs = [CompletionOutput(i, t, [], "stop") for i, t in enumerate(texts)]
        shown = prompt if isinstance(prompt, str) else json.dumps(prompt)
        return [RequestOutput("scripted", shown, [1, 2, 3], outs)]

    def generate(self, prompts, params=None):
        return self._answer(prompts[0], params)

    def chat(self, messages, params=None):
        return self._answer(messages, params)


def hide_tool(monkeypatch, name: str) -> None:
    """Make `name` look uninstalled to every verifier."""
    real = toolchain.find_tool

    def fake(tool: str):
        return None if tool == name else real(tool)

    from lutlm.tasks import verify_asm, verify_c, verify_ir

    for mod in (toolchain, verify_ir, verify_c, verify_asm):
        monkeypatch.setattr(mod, "find_tool", fake, raising=False)


def well_formed(result) -> dict:
    d = json.loads(json.dumps(result.to_dict()))
    assert d["status"] in ("verified", "failed", "unverified")
    assert d["verification"]["status"] == d["status"] and d["attempts"]
    assert set(d["verification"]) == {"status", "message", "tool", "details"}
    return d


# ------------------------------------------------------------------ optimize-ir, scripted


def test_optimize_ir_good_and_bad_answers(tmp_path):
    ir = sum_to_ir(tmp_path)
    good = "Run passes `-sroa -instcombine -simplifycfg` to get instruction count 5 and binary"
    r = optimize_ir(Scripted([good]), ir)
    assert r.status == "verified", r.verification.message
    assert r.answer == "-sroa -instcombine -simplifycfg"
    assert r.verification.details["passes"] == "sroa,instcombine,simplifycfg"
    bad = optimize_ir(Scripted(["Run passes `-no-such-pass-xyz` to get instruction count 3"]), ir)
    assert bad.status == "failed" and "no-such-pass-xyz" in bad.verification.message
    none = optimize_ir(Scripted(["I would use the compiler."]), ir)
    assert none.status == "failed" and "no pass list" in none.verification.message


def test_best_of_n_picks_the_smallest_object(tmp_path):
    ir = sum_to_ir(tmp_path)
    answers = [
        "Run passes `-instcombine` to get instruction count 20",  # keeps the allocas
        "Run passes `-sroa -instcombine -simplifycfg` to get instruction count 5",
        "Run passes `-bogus-pass` to get instruction count 1",
    ]
    r = optimize_ir(Scripted(answers), ir, n=3)
    statuses = [a.verification.status for a in r.attempts]
    assert statuses == ["verified", "verified", "failed"]
    sizes = [a.verification.details["object_size"] for a in r.attempts[:2]]
    assert sizes[1] < sizes[0]  # promoting the allocas shrinks the object file
    assert r.answer == "-sroa -instcombine -simplifycfg" and r.status == "verified"


def test_feedback_retry_recovers_from_a_bad_first_answer(tmp_path):
    ir = sum_to_ir(tmp_path)
    gen = Scripted(
        ["Run passes `-no-such-pass-xyz` to get instruction count 3"],
        ["Run passes `-sroa -instcombine` to get instruction count 1"],  # a wrong count
        ["Run passes `-sroa -instcombine -simplifycfg`."],
    )
    r = optimize_ir(gen, ir, max_retries=3)
    assert r.status == "verified"
    assert [a.round for a in r.attempts] == [0, 1, 2]
    assert [a.verification.status for a in r.attempts] == ["failed", "verified", "verified"]
    first, second, third = gen.prompts
    assert first == get_preset("llm-compiler").prompt(ir=ir)
    assert second.startswith(first) and third.startswith(second)
    turn = second.split("</s><s>[INST]")[1]
    assert "no-such-pass-xyz" in turn  # opt's own words
    actual = r.attempts[1].verification.details["instructions"]
    assert f"the instruction count is {actual}, not 1" in third.split("</s><s>[INST]")[2]
    # The smallest verified object file wins across rounds.
    sizes = [a.verification.details["object_size"] for a in r.attempts[1:]]
    assert r.verification.details["object_size"] == min(sizes)


def test_optimize_ir_without_opt_is_unverified(tmp_path, monkeypatch):
    ir = sum_to_ir(tmp_path)
    hide_tool(monkeypatch, "opt")
    r = optimize_ir(Scripted(["Run passes `-sroa` to get instruction count 6"]), ir)
    assert r.status == "unverified" and r.verification.tool == "opt"


# ------------------------------------------------------------------ decompile, scripted


def test_decompile_from_binary_good_bad_and_missing_gcc(tmp_path, monkeypatch):
    require_tools("gcc", "objdump")
    obj = c_to(tmp_path, SUM_TO, ["gcc", "-O0", "-c"], "sum.o")
    driver = tmp_path / "check.c"
    driver.write_text(CHECK_DRIVER)
    gen = Scripted([SUM_TO])
    r = decompile(gen, binary=obj, function="sum_to", tests=[driver])
    assert r.status == "verified", r.verification.message
    prompt = gen.prompts[0]
    assert prompt.startswith("# This is the assembly code:\n<sum_to>:\n")
    assert prompt.endswith("\n# What is the source code?\n")
    assert "\tret" in prompt or "ret" in prompt.splitlines()[-2]
    bad = decompile(Scripted([SUM_TO_BAD]), asm=r.input, tests=[driver])
    assert bad.status == "failed"
    syntax = decompile(Scripted(["int sum_to(int n) { return n +; }"]), asm=r.input, tests=[driver])
    assert syntax.status == "failed" and "does not compile" in syntax.verification.message
    hide_tool(monkeypatch, "gcc")
    missing = decompile(Scripted([SUM_TO]), asm=r.input, tests=[driver])
    assert missing.status == "unverified" and missing.verification.tool == "gcc"
    with pytest.raises(ValueError, match="'nope' not found"):
        decompile(Scripted([SUM_TO]), binary=obj, function="nope")


# ------------------------------------------------------------------ transpile, scripted


@pytest.mark.parametrize(
    "target, preset",
    [("aarch64", "gg"), ("armv5", "crt"), ("riscv64", "crt")],
)
def test_transpile_good_and_bad_answers(tmp_path, target, preset):
    require_tools("gcc", "llvm-mc", CROSS_GCC[target], QEMU[target])
    x86 = asm_for(tmp_path, SUM_TO, "gcc")
    good = asm_for(tmp_path, SUM_TO, CROSS_GCC[target])
    wrong = asm_for(tmp_path, SUM_TO_BAD, CROSS_GCC[target])
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "print.c").write_text(PRINT_DRIVER)
    wrap = (lambda a: f"```armasm\n{a}```\n") if preset == "gg" else (lambda a: a + "\n```")
    gen = Scripted([wrap(good)])
    r = transpile(gen, x86, target, tests=tests, preset=preset)
    assert r.status == "verified", r.verification.message
    if preset == "crt":  # CRT reads Intel syntax: the AT&T input was converted
        assert gen.prompts[0].startswith(CRT_BOS) and "ptr [rbp" in r.input.lower()
    else:
        assert gen.prompts[0][0]["content"].startswith("Convert the following x86 assembly")
    bad = transpile(Scripted([wrap(wrong)]), x86, target, tests=tests, preset=preset)
    assert bad.status == "failed"
    junk = transpile(
        Scripted([wrap("\tnot_an_instruction r0\n")]), x86, target, tests=tests, preset=preset
    )
    assert junk.status == "failed" and "assemble" in junk.verification.message


def test_transpile_best_of_n_and_missing_qemu(tmp_path, monkeypatch):
    require_tools("gcc", "llvm-mc", CROSS_GCC["aarch64"], QEMU["aarch64"])
    x86 = asm_for(tmp_path, SUM_TO, "gcc")
    good = asm_for(tmp_path, SUM_TO, CROSS_GCC["aarch64"])
    wrong = asm_for(tmp_path, SUM_TO_BAD, CROSS_GCC["aarch64"])
    tests = [PRINT_DRIVER]
    answers = [f"```armasm\n{wrong}```", f"```armasm\n{good}```"]
    r = transpile(Scripted(answers), x86, "aarch64", tests=tests, preset="gg", n=2)
    assert [a.verification.status for a in r.attempts] == ["failed", "verified"]
    assert r.status == "verified" and r.answer == good.strip("\n")
    hide_tool(monkeypatch, "qemu-aarch64")
    m = transpile(Scripted([answers[1]]), x86, "aarch64", tests=tests, preset="gg")
    assert m.status == "unverified" and m.verification.tool == "qemu-aarch64"
    with pytest.raises(ValueError, match="unknown target 'mips'"):
        transpile(Scripted([]), x86, "mips", tests=tests)


def test_superopt_checks_x86_candidates_natively(tmp_path):
    require_tools("gcc")
    x86 = asm_for(tmp_path, SUM_TO, "gcc")
    fast = c_to(tmp_path, SUM_TO, ["gcc", "-S", "-O2"], "fast.s").read_text()
    wrong = c_to(tmp_path, SUM_TO_BAD, ["gcc", "-S", "-O2"], "wrong.s").read_text()
    gen = Scripted([f"```assembly\n{fast}```"])
    r = transpile(gen, x86, "x86_64", tests=[PRINT_DRIVER], preset="superopt", c_code=SUM_TO)
    assert r.status == "verified", r.verification.message
    assert "```c\nint sum_to(int n)" in gen.prompts[0][0]["content"]
    bad = transpile(
        Scripted([f"```assembly\n{wrong}```"]),
        x86,
        "x86_64",
        tests=[PRINT_DRIVER],
        preset="superopt",
        c_code=SUM_TO,
    )
    assert bad.status == "failed"


# ------------------------------------------------------------------ tiny random models

DS_BOS, DS_EOS = CRT_BOS, "<｜end▁of▁sentence｜>"
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
FAMILIES = {
    # Code Llama -> LLM Compiler
    "codellama": ("LlamaConfig", "LlamaForCausalLM", {}, ["<s>", "</s>"], "<s>", "</s>"),
    # DeepSeek-Coder (linear rope scaling) -> LLM4Decompile, CRT
    "deepseek": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
        [DS_BOS, DS_EOS],
        DS_BOS,
        DS_EOS,
    ),
    # Qwen2.5-Coder -> gg, superopt
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"tie_word_embeddings": True},
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        "<|im_end|>",
    ),
}
CORPUS = [
    SUM_TO,
    CHECK_DRIVER,
    "define dso_local i32 @sum_to(i32 noundef %0) #0 {\n  %2 = alloca i32, align 4\n",
    "\tmovl\t%edi, -20(%rbp)\n\taddl\t$1, -4(%rbp)\n\tmov\tDWORD PTR -20[rbp], edi\n",
    "[INST] Tell me how to optimize this LLVM-IR for object file size: [/INST] Run passes",
    "# This is the assembly code:\n# What is the source code?\n### Instruction:\n```asm\n",
]


def tiny_model(path: Path, family: str) -> Path:
    """A random 2-layer checkpoint of `family` and a byte-level BPE trained here whose
    special tokens are the family's, BOS added by the post-processor when it has one."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    from .model_assets import transformers_module

    transformers = transformers_module()
    import torch

    cfg_name, model_name, extra, specials, bos, eos = FAMILIES[family]
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS * 10, trainer)
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    path.mkdir(parents=True, exist_ok=True)
    backend.save(str(path / "tokenizer.json"))
    config = {"eos_token": eos, "add_bos_token": bos is not None}
    if bos is not None:
        config["bos_token"] = bos
    if family == "qwen2":
        config["chat_template"] = CHATML
    (path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    ids = {k: backend.token_to_id(t) for k, t in (("bos", bos), ("eos", eos)) if t}
    cfg = getattr(transformers, cfg_name)(
        vocab_size=448,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=ids.get("bos"),
        eos_token_id=ids["eos"],
        **extra,
    )
    torch.manual_seed(0)
    getattr(transformers, model_name)(cfg).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def tiny_llms(tmp_path_factory):
    from lutlm.llm import LLM

    root = tmp_path_factory.mktemp("tiny")
    return {
        f: LLM(tiny_model(root / f, f), weights="f32", head="f32", kv_cache_memory_gb=0.05)
        for f in FAMILIES
    }


def short(preset: str):
    return get_preset(preset).sampling_params(max_tokens=12)


def test_llm_compiler_path_on_a_tiny_code_llama(tmp_path, tiny_llms):
    ir = sum_to_ir(tmp_path)
    llm = tiny_llms["codellama"]
    r = optimize_ir(llm, ir, params=short("llm-compiler"), max_retries=1)
    d = well_formed(r)
    assert d["status"] in ("failed", "unverified")
    if r.attempts[0].verification.status == "failed":  # the feedback round ran
        assert [a.round for a in r.attempts] == [0, 1]
    # The feedback turn's </s><s> are the special ids, not text.
    from lutlm.tasks.optimize_ir import _followup

    turn = llm.tokenizer.encode(_followup(get_preset("llm-compiler"), "[INST] q [/INST]", "a", "f"))
    eos = llm.tokenizer.backend.token_to_id("</s>")
    assert turn.count(llm.tokenizer.bos_token_id) == 2 and turn.count(eos) == 1
    typed = "[INST] Tell me how to optimize this LLVM-IR for object file size:\n\n<code>"
    bos = llm.tokenizer.bos_token_id
    assert r.prompt_token_ids == llm.tokenizer.encode(typed + ir + "</code> [/INST]")
    assert r.prompt_token_ids[0] == bos and r.prompt_token_ids.count(bos) == 1


def test_decompiler_and_crt_paths_on_a_tiny_deepseek(tmp_path, tiny_llms):
    require_tools("gcc", "objdump", "llvm-mc", "arm-linux-gnueabi-gcc", "qemu-arm")
    llm = tiny_llms["deepseek"]
    bos = llm.tokenizer.bos_token_id
    obj = c_to(tmp_path, SUM_TO, ["gcc", "-O0", "-c"], "sum.o")
    r = decompile(
        llm, binary=obj, function="sum_to", tests=[CHECK_DRIVER], params=short("llm4decompile")
    )
    well_formed(r)
    assert r.status == "failed"  # random C does not compile (or fails the test)
    assert r.prompt_token_ids[0] == bos and r.prompt_token_ids.count(bos) == 1
    assert llm.tokenizer.decode(r.prompt_token_ids) == r.prompt

    x86 = asm_for(tmp_path, SUM_TO, "gcc")
    t = transpile(llm, x86, "armv5", tests=[PRINT_DRIVER], preset="crt", params=short("crt"))
    well_formed(t)
    assert t.status == "failed"
    # Two BOS ids: the tokenizer's and the template's literal, as CRT was trained.
    assert t.prompt_token_ids[:2] == [bos, bos] and t.prompt_token_ids.count(bos) == 2


def test_gg_and_superopt_paths_on_a_tiny_qwen2(tmp_path, tiny_llms):
    require_tools("gcc", "aarch64-linux-gnu-gcc", "qemu-aarch64")
    llm = tiny_llms["qwen2"]
    tok = llm.tokenizer
    x86 = asm_for(tmp_path, SUM_TO, "gcc")
    r = transpile(llm, x86, "aarch64", tests=[PRINT_DRIVER], preset="gg", params=short("gg"))
    well_formed(r)
    assert r.status == "failed"  # no ```armasm block in random text
    user = "Convert the following x86 assembly code to ARM assembly:\n```x86asm\n"
    typed = f"<|im_start|>user\n{user}{x86.strip(chr(10))}\n```<|im_end|>\n<|im_start|>assistant\n"
    assert r.prompt_token_ids == tok.encode(typed, add_special_tokens=False)
    assert r.prompt_token_ids[0] == tok.backend.token_to_id("<|im_start|>")
    s = transpile(
        llm,
        x86,
        "x86_64",
        tests=[PRINT_DRIVER],
        preset="superopt",
        c_code=SUM_TO,
        params=short("superopt"),
    )
    well_formed(s)
    assert s.status == "failed" and "Optimized Assembly Code:\n<|im_end|>" in s.prompt


def test_cli_optimize_ir_writes_the_chosen_ir(tmp_path, monkeypatch, capsys):
    from lutlm import cli
    from lutlm.cli import tasks

    ir = sum_to_ir(tmp_path)
    (tmp_path / "sum.ll").write_text(ir)
    answer = "Run passes `-sroa -instcombine -simplifycfg` to get instruction count 9"
    monkeypatch.setattr(tasks, "load_llm", lambda args: Scripted([answer]))
    out = tmp_path / "out.ll"
    code = cli.main(["optimize-ir", str(tmp_path / "sum.ll"), "--json", "-o", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["status"] == "verified"
    written = out.read_text()
    assert written.rstrip("\n") == report["verification"]["details"]["optimized_ir"].rstrip("\n")
    assert "alloca" not in written  # -Oz's or the model's: either promoted the locals
    assert cli.main(["optimize-ir", str(tmp_path / "sum.ll"), "--preset", "crt"]) == 2
    assert "'crt' is for transpile, not optimize-ir" in capsys.readouterr().err
    assert (
        cli.main(["transpile", str(tmp_path / "sum.ll"), "--to", "armv5", "--preset", "superopt"])
        == 2
    )
    assert "transpiles to x86_64" in capsys.readouterr().err
