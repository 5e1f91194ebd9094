"""`lutlm quantize` and packed directories: the same model, loaded by mapping its arrays.

A packed directory must give bit-identical logits to loading its source with the same
options (the arrays are the ones the source's load computed), a tokenizer that encodes,
decodes and renders chats like the source's, and clear errors for damaged files.
"""

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lutlm import LLM, SamplingParams
from lutlm.cli import main
from lutlm.formats.packed import MANIFEST, WEIGHTS
from lutlm.model import ForwardBatch, KVCache, load_model
from lutlm.model.packed import save_packed
from lutlm.tokenizer import Tokenizer

from .model_assets import smollm2_path
from .test_model_hf import make_checkpoint
from .test_tokenizer import CHAT, STREAM_TEXT, TEXTS
from .tiny_model import tiny_decoder


def logits(model, ids):
    cache = KVCache(model.config, num_blocks=8, block_size=16)
    batch = ForwardBatch.single(ids, 0, [5, 2, 7, 0], 16, all_logits=True)
    return model.forward(batch, cache)


@pytest.fixture(scope="module")
def smollm2_packed(tmp_path_factory):
    """(the SmolLM2 GGUF, its packed directory written by the CLI)."""
    gguf = smollm2_path()
    out = tmp_path_factory.mktemp("packed") / "smollm2"
    args = ["--weights", "int4", "--head", "int8", "--act-bits", "16"]
    assert main(["quantize", str(gguf), str(out), *args]) == 0
    return gguf, out


@pytest.mark.parametrize("act_bits", [16, 8])
def test_smollm2_packed_logits_are_bit_identical(smollm2_packed, act_bits):
    gguf, out = smollm2_packed
    ids = np.random.default_rng(0).integers(0, 49152, size=40).tolist()
    start = time.perf_counter()
    packed = load_model(out, act_bits=act_bits)
    seconds = time.perf_counter() - start
    print(f"packed SmolLM2 loaded in {seconds:.3f} s")
    # Mapped, not copied: the arrays are read-only views of the file.
    for a in (packed.layers[0].qkv.weight.codes, packed.lm_head.weight.d, packed.embed.weight):
        assert not a.flags.writeable and not a.flags.owndata
    ref = load_model(gguf, weights="int4", head="int8", act_bits=act_bits)
    assert packed.config == ref.config
    np.testing.assert_array_equal(logits(packed, ids), logits(ref, ids))


def test_smollm2_packed_tokenizer_round_trip(smollm2_packed):
    gguf, out = smollm2_packed
    ref, tok = Tokenizer.from_gguf(gguf), Tokenizer.from_pretrained(out)
    assert (tok.bos_token_id, tok.eos_token_ids) == (ref.bos_token_id, ref.eos_token_ids)
    assert tok.vocab_size == ref.vocab_size
    assert tok.chat_templates == ref.chat_templates
    assert tok.template_tokens == ref.template_tokens
    for text in [*TEXTS, STREAM_TEXT]:
        for special in (True, False):
            ids = ref.encode(text, add_special_tokens=special)
            assert tok.encode(text, add_special_tokens=special) == ids, text
            assert tok.decode(ids) == ref.decode(ids)
            assert tok.decode(ids, skip_special_tokens=False) == ref.decode(ids, False)
    for generation_prompt in (True, False):
        assert tok.apply_chat_template(CHAT, generation_prompt) == ref.apply_chat_template(
            CHAT, generation_prompt
        )


def test_smollm2_packed_llm_and_cli(smollm2_packed):
    gguf, out = smollm2_packed
    params = SamplingParams(max_tokens=12, temperature=0)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = LLM(out).chat(question, params)[0]
    assert answer.token_ids == LLM(gguf).chat(question, params)[0].token_ids
    assert "Paris" in answer.text
    args = ["generate", "--chat", "What is the capital of France?", "--max-tokens", "12"]
    run = subprocess.run(
        [sys.executable, "-m", "lutlm.cli", *args, "--model", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "Paris" in run.stdout


@pytest.mark.parametrize(
    "case, weights, head",
    [
        ("qwen2-untied", "int4", "f32"),  # q/k/v biases, an untied head
        ("qwen2-untied", "int8", "int8"),
        ("llama-gqa-linear-rope", "ternary", "int4"),
        ("qwen2-tied", "f32", "f32"),
    ],
)
def test_hf_checkpoint_packed_logits_are_bit_identical(tmp_path, case, weights, head):
    src, out = tmp_path / "hf", tmp_path / "packed"
    make_checkpoint(src, case)
    (src / "tokenizer_config.json").write_text('{"eos_token": "b", "chat_template": "{{ 1 }}"}')
    assert main(["quantize", str(src), str(out), "--weights", weights, "--head", head]) == 0
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    assert json.loads((out / MANIFEST).read_text())["act_bits"] == 16
    ids = np.random.default_rng(1).integers(0, 300, size=40).tolist()
    for act_bits in (8, 16):
        ref = load_model(src, weights=weights, head=head, act_bits=act_bits)
        np.testing.assert_array_equal(
            logits(load_model(out, act_bits=act_bits), ids), logits(ref, ids)
        )


def test_quantize_refuses_a_used_output_and_leaves_nothing_on_failure(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')  # and no weights
    assert main(["quantize", str(src), str(out)]) == 1  # the loader's error: exit 1
    assert "no *.safetensors weights" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no partial output
    assert main(["quantize", str(src), str(src)]) == 2  # refused before loading: usage
    assert "exists and is not an empty directory" in capsys.readouterr().err


@pytest.fixture
def tiny_packed(tmp_path):
    """A packed tiny f32 model (tests/tiny_model.py) and its reference logits."""
    model = tiny_decoder()
    save_packed(model, tmp_path, act_bits=8)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    return tmp_path, ids, logits(model, ids)


def edit_arrays(path, edit):
    arrays = load_file(path / WEIGHTS)
    edit(arrays)
    save_file(arrays, path / WEIGHTS)


def test_tiny_packed_round_trip(tiny_packed):
    path, ids, ref = tiny_packed
    np.testing.assert_array_equal(logits(load_model(path), ids), ref)


def test_manifest_errors(tiny_packed):
    path = tiny_packed[0]
    manifest = json.loads((path / MANIFEST).read_text())
    file = re.escape(str(path / MANIFEST))
    (path / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match=f"{file}: manifest version 99 is not supported"):
        load_model(path)
    (path / MANIFEST).write_text('{"format": "lutlm-packed", "vers')
    with pytest.raises(ValueError, match=f"{file}: not a readable manifest"):
        load_model(path)
    layers = [{k: v for k, v in manifest["layers"][0].items() if k != "qkv"}]
    (path / MANIFEST).write_text(json.dumps({**manifest, "layers": layers * 2}))
    with pytest.raises(ValueError, match=f"{file}: malformed manifest .*'qkv'"):
        load_model(path)
    o = {**manifest["layers"][0]["o"], "shape": [32, 31]}
    layers = [{**manifest["layers"][0], "o": o}] * 2
    (path / MANIFEST).write_text(json.dumps({**manifest, "layers": layers}))
    with pytest.raises(ValueError, match=rf"{file}: layers.0.o has shape \(32, 31\), expected"):
        load_model(path)


def test_missing_truncated_and_mistyped_arrays(tiny_packed):
    path = tiny_packed[0]
    file = re.escape(str(path / WEIGHTS))
    good = (path / WEIGHTS).read_bytes()
    edit_arrays(path, lambda a: a.pop("layers.1.down.w"))
    with pytest.raises(ValueError, match=f"{file}: array 'layers.1.down.w' is missing"):
        load_model(path)
    (path / WEIGHTS).write_bytes(good[:-100])
    with pytest.raises(ValueError, match=f"{file}: truncated: array '.*' ends at byte"):
        load_model(path)
    (path / WEIGHTS).write_bytes(good[:50])
    with pytest.raises(ValueError, match=f"{file}: truncated"):
        load_model(path)
    (path / WEIGHTS).write_bytes(good)

    def mistype(a):
        a["layers.0.attn_norm"] = a["layers.0.attn_norm"].astype(np.float16)

    edit_arrays(path, mistype)
    with pytest.raises(
        ValueError, match=rf"{file}: array 'layers.0.attn_norm' is F16 \[32\], expected F32 \[32\]"
    ):
        load_model(path)
    (path / WEIGHTS).write_bytes(good)
    edit_arrays(path, lambda a: a.update(embed=a["embed"][:, :16].copy()))
    with pytest.raises(
        ValueError, match=rf"{file}: array 'embed' is F32 \[96, 16\], expected F32 \[96, 32\]"
    ):
        load_model(path)


def test_packed_source_quantizes_to_the_same_arrays(tiny_packed, tmp_path_factory):
    src, ids, ref = tiny_packed
    out = tmp_path_factory.mktemp("requantized") / "out"
    assert main(["quantize", str(src), str(out)]) == 0
    before, after = load_file(src / WEIGHTS), load_file(out / WEIGHTS)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    shutil.rmtree(src)  # the output stands alone
    np.testing.assert_array_equal(logits(load_model(out), ids), ref)
