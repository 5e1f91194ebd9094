"""Compiler-task presets: prompts exactly as the model cards write them, extractors on
answers shaped like the models', and the CRT begin-of-sentence literal as a token.

The expected prompts below are typed from the sources each preset names (model cards,
READMEs and inference scripts), not produced by lutlm's templates.
"""

import json

import pytest

from lutlm.tasks.presets import (
    CRT_BOS,
    PRESETS,
    extract_c,
    extract_pass_list,
    get_preset,
    presets_for,
)
from lutlm.tokenizer import Tokenizer

IR = "define i32 @f(i32 %0) {\n  ret i32 %0\n}"
ASM_INTEL = "f:\n\tmov\teax, edi\n\tret"
ASM_ATT = "f:\n\tmovl\t%edi, %eax\n\tret"


def test_llm_compiler_prompts_match_the_model_card():
    # facebook/llm-compiler-*-ftd, llm_compiler_demo.py
    assert get_preset("llm-compiler").prompt(ir=IR) == (
        "[INST] Tell me how to optimize this LLVM-IR for object file size:\n\n"
        "<code>define i32 @f(i32 %0) {\n  ret i32 %0\n}</code> [/INST]"
    )
    assert get_preset("llm-compiler-disassemble").prompt(asm=ASM_ATT) == (
        "[INST] Disassemble this code to LLVM-IR:\n\n"
        "<code>f:\n\tmovl\t%edi, %eax\n\tret</code> [/INST]"
    )
    emulate = get_preset("llm-compiler-emulate").prompt(
        ir=IR, passes="module(default<Oz>)", ir_count=8, bin_size=65
    )
    assert emulate == (
        "[INST] Give the LLVM-IR for the following code when optimized using "
        "opt -p 'module(default<Oz>)':\n\n<code>define i32 @f(i32 %0) {\n  ret i32 %0\n}</code>"
        "\n\nThe input code has instruction count 8 and binary size 65 bytes. [/INST]"
    )
    asm = get_preset("llm-compiler-emulate-asm").prompt(ir=IR, passes="p", ir_count=1, bin_size=2)
    assert asm.startswith("[INST] Give the assembly for the following code when optimized using")


def test_llm4decompile_prompt_matches_the_readme():
    # LLM4Decompile README: before + asm.strip() + after
    before = "# This is the assembly code:\n"
    after = "\n# What is the source code?\n"
    assert get_preset("llm4decompile").prompt(asm=ASM_ATT) == before + ASM_ATT + after


def test_crt_prompt_matches_the_repository_template():
    # github.com/ahmedheakl/asm2asm inference.py, instruction.format(asm_x86=..., asm_arm="")
    expected = (
        "<｜begin▁of▁sentence｜>You are a helpful coding assistant assistant on converting "
        "from x86 to ARM assembly.\n### Instruction:\nConvert this x86 assembly into ARM\n"
        "```asm\nf:\n\tmov\teax, edi\n\tret\n```\n### Response:\n```asm\n\n"
    )
    crt = get_preset("crt")
    assert crt.format(asm=ASM_INTEL, target_name=crt.target_name("armv5")) == expected
    assert crt.input_syntax == "intel" and crt.stop == ("```",)


def test_gg_and_superopt_user_messages():
    # github.com/ahmedheakl/Guaranteed-Guess inference.py
    gg = get_preset("gg")
    assert gg.chat and gg.input_syntax == "att"
    assert gg.messages(asm=ASM_ATT, target_name=gg.target_name("aarch64")) == [
        {
            "role": "user",
            "content": "Convert the following x86 assembly code to ARM assembly:\n"
            "```x86asm\nf:\n\tmovl\t%edi, %eax\n\tret\n```",
        }
    ]
    msg = get_preset("superopt").messages(c_code="int f(int x){return x;}", asm=ASM_ATT)
    assert msg[0]["content"] == (
        "Given the following C code and assembly code, your task is to generate highly "
        "optimized x86-64 assembly code.\nC Code:\n\n```c\nint f(int x){return x;}\n```\n\n"
        "Assembly Code:\n\n```assembly\nf:\n\tmovl\t%edi, %eax\n\tret\n```\n\n"
        "Only output the optimized assembly code. Do not include any other text. Do not "
        "write any comments in the assembly code. Wrap the assembly code in ```assembly``` "
        "tags.\nOptimized Assembly Code:\n"
    )


def test_defaults_and_errors():
    for p in PRESETS.values():
        sp = p.sampling_params()
        assert sp.temperature == 0 and sp.prompt_lookup == 8 and sp.stop == list(p.stop)
        assert p.sources, p.name
    assert get_preset("llm-compiler").sampling_params(max_tokens=7, n=3).max_tokens == 7
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose one of: crt, gg"):
        get_preset("nope", "transpile")
    with pytest.raises(ValueError, match="'crt' is for transpile, not decompile"):
        get_preset("crt", "decompile")
    with pytest.raises(ValueError, match="needs ir"):
        get_preset("llm-compiler").prompt()
    with pytest.raises(ValueError, match="transpiles to x86_64, not 'armv5'"):
        get_preset("superopt").target_name("armv5")
    assert presets_for("decompile") == ["llm4decompile"]


def test_pass_list_extraction():
    a = extract_pass_list(
        "Run passes `-reg2mem -sroa -simplifycfg -early-cse` to reduce instruction count from "
        "14 to 10 and binary size from 120 to 65 bytes:\n<code>define i32 @f() {}</code>"
    )
    assert a.answer == "-reg2mem -sroa -simplifycfg -early-cse"
    assert a.fields["predicted_instructions"] == 10 and a.fields["predicted_size"] == 65
    assert a.fields["predicted_ir"] == "define i32 @f() {}"
    b = extract_pass_list("Run passes -instcombine -gvn to get instruction count 4 and binary size")
    assert b.answer == "-instcombine -gvn" and b.fields == {"predicted_instructions": 4}
    assert extract_pass_list("module(function(sroa,instcombine))").answer == (
        "module(function(sroa,instcombine))"
    )
    assert extract_pass_list("I cannot help with that.\nSorry.").answer is None
    assert extract_pass_list("Run passes -sroa -gvn.").answer == "-sroa -gvn"


def test_code_extractors():
    bare = "int f(int x)\n{\n  return x;\n}"
    assert extract_c(bare + "\n").answer == bare
    assert extract_c("Here:\n```c\nint g(void) { return 1; }\n```\nDone").answer == (
        "int g(void) { return 1; }"
    )
    assert extract_c("   \n").answer is None
    crt = get_preset("crt")
    assert crt.extract("\tmov\tr0, r1\n\tbx\tlr\n\n").answer == "\tmov\tr0, r1\n\tbx\tlr"
    assert crt.extract("").answer is None
    gg = get_preset("gg")
    ans = "Here is the ARM code:\n```armasm\nf:\n\tmov\tw0, w0\n\tret\n```\n"
    assert gg.extract(ans).answer == "f:\n\tmov\tw0, w0\n\tret"
    assert gg.extract("```armasm\nf:\n\tret\n").answer == "f:\n\tret"  # cut by max_tokens
    assert get_preset("superopt").extract("```assembly\nf:\n\tret\n```").answer == "f:\n\tret"
    assert get_preset("llm-compiler-disassemble").extract(" <code>x</code>").answer == "x"


def deepseek_tokenizer_dir(path):
    """A byte-level BPE trained here, with DeepSeek-Coder's BOS/EOS texts as special tokens
    and a post-processor that adds BOS, as DeepSeek-Coder's tokenizer.json does."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    bos, eos = CRT_BOS, "<｜end▁of▁sentence｜>"
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[bos, eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["You are a helpful coding assistant", "mov eax, DWORD PTR [rbp-4]", "### Response"]
    backend.train_from_iterator(corpus * 20, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    path.mkdir(parents=True, exist_ok=True)
    backend.save(str(path / "tokenizer.json"))
    config = {"bos_token": bos, "eos_token": eos, "add_bos_token": True}
    (path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    return path


def test_crt_literal_bos_becomes_the_bos_token(tmp_path):
    tok = Tokenizer.from_pretrained(deepseek_tokenizer_dir(tmp_path / "tok"))
    crt = get_preset("crt")
    ids = tok.encode(crt.format(asm=ASM_INTEL, target_name="ARM"))
    bos = tok.bos_token_id
    assert bos == 0
    # Two BOS, as CRT was trained: the tokenizer's own and the template's literal.
    assert ids[:2] == [bos, bos] and ids.count(bos) == 2
    assert tok.decode(ids[2:]) == crt.format(asm=ASM_INTEL, target_name="ARM")[len(CRT_BOS) :]
