"""Loaders refuse bad config values, tensor shapes and shard indexes with one line that
names the file and the key (or tensor); chat templates render under a time and a size
budget. Every error case here was a traceback, a hang or a model that failed every
request; the few other tests guard what must keep working (tiny models load, an embedding
padded past the tokenizer, ordinary templates render as before).

The models are tiny: GGUFs written with gguf's GGUFWriter, HF directories with numpy
safetensors and a hand-written config.json, packed directories from tests/tiny_model.py.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from safetensors.numpy import save_file

import lutlm.tokenizer.template_budget as template_budget
from lutlm import LLM, SamplingParams
from lutlm.engine.engine import LLMEngine
from lutlm.formats.packed import MANIFEST
from lutlm.model import ModelConfig, load_model
from lutlm.model.config import ConfigError
from lutlm.model.packed import save_packed
from lutlm.tokenizer import Tokenizer

from .tiny_model import tiny_decoder

HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 32, 4, 2, 48, 64
HEAD_DIM = HIDDEN // HEADS


def fails(path: Path, message: str):
    """pytest.raises(ValueError) whose message is `path: message` on one line."""
    return pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {message}$")


# ------------------------------------------------------------------ GGUF


def gguf_metadata() -> dict:
    return {
        "llama.block_count": 1,
        "llama.context_length": 128,
        "llama.embedding_length": HIDDEN,
        "llama.feed_forward_length": FFN,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV_HEADS,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.freq_base": 10000.0,
        "llama.vocab_size": VOCAB,
    }


def gguf_tensors() -> dict[str, np.ndarray]:
    """A one-layer llama's tensors, in numpy order (rows, columns)."""
    rng = np.random.default_rng(0)
    shapes = {
        "token_embd.weight": (VOCAB, HIDDEN),
        "output_norm.weight": (HIDDEN,),
        "blk.0.attn_norm.weight": (HIDDEN,),
        "blk.0.attn_q.weight": (HEADS * HEAD_DIM, HIDDEN),
        "blk.0.attn_k.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        "blk.0.attn_v.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        "blk.0.attn_output.weight": (HIDDEN, HEADS * HEAD_DIM),
        "blk.0.ffn_norm.weight": (HIDDEN,),
        "blk.0.ffn_gate.weight": (FFN, HIDDEN),
        "blk.0.ffn_up.weight": (FFN, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, FFN),
    }
    return {
        name: (0.1 * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in shapes.items()
    }


def sentencepiece_vocab(n: int) -> dict:
    """A GGUF `llama` (sentencepiece) vocabulary of n tokens."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"\u2581w{i}" for i in range(n - 3)]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * n,
        "tokenizer.ggml.token_type": [2, 3, 3] + [1] * (n - 3),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }


def write_gguf(
    path: Path,
    metadata: dict | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """A tiny llama GGUF; metadata and tensors given replace (or add to) the defaults, and
    keys in drop are left out."""
    import gguf

    meta = {**gguf_metadata(), **(metadata or {})}
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in meta.items():
        if key in drop:
            continue
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif value < 0:
            writer.add_int32(key, value)
        else:
            writer.add_uint32(key, value)
    for name, array in {**gguf_tensors(), **(tensors or {})}.items():
        if name not in drop:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tiny_gguf_loads(tmp_path):
    """The baseline every case below breaks one thing of."""
    m = load_model(write_gguf(tmp_path / "model.gguf"), weights="f32", head="f32")
    assert (m.config.num_heads, m.config.head_dim, m.config.vocab_size) == (HEADS, HEAD_DIM, VOCAB)


@pytest.mark.parametrize(
    "metadata, drop, message",
    [
        # The head size was hidden // heads: ZeroDivisionError.
        (
            {"llama.attention.head_count": 0},
            (),
            "llama.attention.head_count is 0; it must be a positive integer",
        ),
        (
            {"llama.attention.head_count_kv": 0},
            (),
            "llama.attention.head_count_kv is 0; it must be a positive integer",
        ),
        (
            {"llama.attention.head_count_kv": 3},
            (),
            r"llama.attention.head_count \(4\) is not a multiple of "
            r"llama.attention.head_count_kv \(3\): .*",
        ),
        (
            {"llama.embedding_length": 30},
            (),
            r"llama.embedding_length \(30\) is not a multiple of llama.attention.head_count "
            r"\(4\), and llama.attention.key_length is not given",
        ),
        (
            {"llama.attention.key_length": 7},
            (),
            "llama.attention.key_length is 7; it must be even .*",
        ),
        (
            {"llama.attention.value_length": 16},
            (),
            "llama.attention.value_length is 16; only 8 .*",
        ),
        (
            {"llama.block_count": 0},
            (),
            "llama.block_count is 0; it must be a positive integer",
        ),
        (
            {"llama.feed_forward_length": [48, 48]},  # per-layer sizes: not supported
            (),
            r"llama.feed_forward_length is \[48, 48\]; it must be a positive integer",
        ),
        (
            {"llama.vocab_size": 0},
            (),
            "llama.vocab_size is 0; it must be a positive integer",
        ),
        (
            {"llama.rope.freq_base": 0.0},
            (),
            "llama.rope.freq_base is 0.0; it must be a finite number above 0",
        ),
        (
            {"llama.attention.layer_norm_rms_epsilon": float("nan")},
            (),
            "llama.attention.layer_norm_rms_epsilon is nan; it must be a finite number above 0",
        ),
        (
            {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": -2.0},
            (),
            "llama.rope.scaling.factor is -2.0; it must be a finite number above 0",
        ),
        (
            {"llama.rope.scaling.type": "yarn"},
            (),
            "llama.rope.scaling.type is 'yarn'; supported: 'none', 'linear'",
        ),
        (
            {},
            ("llama.vocab_size",),
            "metadata key llama.vocab_size is missing, and there is no tokenizer.ggml.tokens "
            "to count",
        ),
    ],
)
def test_gguf_config_errors_name_the_file_and_key(tmp_path, metadata, drop, message):
    path = write_gguf(tmp_path / "model.gguf", metadata, drop=drop)
    with fails(path, message):
        load_model(path, weights="f32")


def test_gguf_embedding_with_fewer_rows_than_the_vocabulary(tmp_path):
    """It loaded, and generation raised IndexError at the first token past the rows."""
    rows = gguf_tensors()["token_embd.weight"][:50]
    path = write_gguf(tmp_path / "model.gguf", tensors={"token_embd.weight": rows})
    with fails(
        path,
        r"tensor 'token_embd.weight' has shape \(50, 32\), expected \(64, 32\): a row for each "
        "of the 64 tokens of llama.vocab_size",
    ):
        load_model(path, weights="f32")
    # Without llama.vocab_size the vocabulary is the tokenizer's token count.
    path = write_gguf(
        tmp_path / "counted.gguf",
        sentencepiece_vocab(VOCAB),
        tensors={"token_embd.weight": rows},
        drop=("llama.vocab_size",),
    )
    with fails(
        path,
        r"tensor 'token_embd.weight' has shape \(50, 32\), expected \(64, 32\): a row for each "
        "of the 64 tokens of the number of tokenizer.ggml.tokens",
    ):
        load_model(path, weights="f32")


@pytest.mark.parametrize(
    "name, shape",
    [
        ("blk.0.attn_norm.weight", (HIDDEN - 1,)),
        ("blk.0.ffn_norm.weight", (HIDDEN, 2)),
        ("output_norm.weight", (2 * HIDDEN,)),
        ("output.weight", (VOCAB - 1, HIDDEN)),  # an untied head: one logit per token
    ],
)
def test_gguf_norm_and_head_shapes_are_checked(tmp_path, name, shape):
    want = gguf_tensors().get(name, np.zeros((VOCAB, HIDDEN))).shape
    bad = np.zeros(shape, np.float32)
    path = write_gguf(tmp_path / "model.gguf", tensors={name: bad})
    shown = re.escape(f"{tuple(shape)}, expected {tuple(want)}")
    with fails(path, f"tensor {name!r} has shape {shown}.*"):
        load_model(path, weights="f32")


def test_tokenizer_larger_than_the_embedding_is_refused_at_load(tmp_path):
    """80 tokens for 64 embedding rows: the model loaded and every request then failed
    in the sampler (vocab size 80, logits 64 wide)."""
    path = write_gguf(tmp_path / "model.gguf", sentencepiece_vocab(80))
    with pytest.raises(ValueError) as e:
        LLM(path, weights="f32", head="f32", kv_cache_memory_gb=0.01)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: the tokenizer has 80 tokens, more than the 64 of the model")
    assert "vocab_size" in msg


def test_embedding_padded_past_the_tokenizer_is_fine(tmp_path):
    """More rows than tokens (padding to a round size) is how many models ship."""
    path = write_gguf(tmp_path / "model.gguf", sentencepiece_vocab(60))
    llm = LLM(path, weights="f32", head="f32", kv_cache_memory_gb=0.01)
    out = llm.generate("w1 w2", SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 3
    assert all(t < 60 for t in out[0].outputs[0].token_ids)


def test_engine_refuses_a_vocab_size_past_the_model():
    model = tiny_decoder(num_layers=1)
    with pytest.raises(ValueError, match=r"vocab_size \(97\) is larger than the model's .*96"):
        LLMEngine(model, [], num_blocks=4, vocab_size=97)


# ------------------------------------------------------------------ HF directories


def hf_config(**changes) -> dict:
    config = {
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    }
    return {**config, **changes}


def hf_tensors() -> dict[str, np.ndarray]:
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
        "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
        "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
        "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
        "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
        "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
        "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
        "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
        "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
    }
    tensors = {names[k]: v for k, v in gguf_tensors().items()}
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    return tensors


def write_hf(root: Path, config, tensors: dict[str, np.ndarray] | None = None) -> Path:
    root.mkdir(exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (root / "config.json").write_text(text)
    save_file({**hf_tensors(), **(tensors or {})}, str(root / "model.safetensors"))
    return root


def test_tiny_hf_directory_loads(tmp_path):
    m = load_model(write_hf(tmp_path / "hf", hf_config()), weights="f32", head="f32")
    assert (m.config.num_kv_heads, m.config.vocab_size) == (KV_HEADS, VOCAB)


@pytest.mark.parametrize(
    "config, message",
    [
        ("[1, 2]", "expected a JSON object, found list"),
        ('"llama"', "expected a JSON object, found str"),
        (
            {k: v for k, v in hf_config().items() if k != "num_attention_heads"},
            "num_attention_heads is missing",
        ),
        (hf_config(num_attention_heads=None), "num_attention_heads is missing"),
        (
            hf_config(num_attention_heads=0),
            "num_attention_heads is 0; it must be a positive integer",
        ),
        (
            hf_config(num_attention_heads=-4),
            "num_attention_heads is -4; it must be a positive integer",
        ),
        (
            hf_config(num_attention_heads=[4]),
            r"num_attention_heads is \[4\]; it must be a positive integer",
        ),
        (
            hf_config(num_key_value_heads=0),
            "num_key_value_heads is 0; it must be a positive integer",
        ),
        (
            hf_config(num_key_value_heads=3),
            r"num_attention_heads \(4\) is not a multiple of num_key_value_heads \(3\): .*",
        ),
        (
            hf_config(hidden_size=30),
            r"hidden_size \(30\) is not a multiple of num_attention_heads \(4\), and head_dim "
            "is not given",
        ),
        (hf_config(head_dim=0), "head_dim is 0; it must be a positive integer"),
        (
            hf_config(num_hidden_layers="1"),
            "num_hidden_layers is '1'; it must be a positive integer",
        ),
        (hf_config(num_hidden_layers=0), "num_hidden_layers is 0; it must be a positive integer"),
        (hf_config(vocab_size=0), "vocab_size is 0; it must be a positive integer"),
        (hf_config(intermediate_size=True), "intermediate_size is True; .*"),
        (hf_config(rms_norm_eps=-1e-6), "rms_norm_eps is -1e-06; it must be a finite number .*"),
        (hf_config(rope_theta=0), "rope_theta is 0; it must be a finite number above 0"),
        (
            hf_config(rope_scaling={"rope_type": "linear", "factor": 0}),
            "rope_scaling.factor is 0; it must be a finite number above 0",
        ),
        (
            hf_config(
                rope_scaling={
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 4.0,
                    "high_freq_factor": 4.0,
                }
            ),
            "rope_scaling.high_freq_factor must be above its low_freq_factor .*",
        ),
        (hf_config(rope_scaling=[1]), r"rope_scaling is \[1\]; expected an object"),
        (
            hf_config(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
            "rope_scaling type 'yarn' is not supported .*",
        ),
        (hf_config(hidden_act="gelu"), "hidden_act is 'gelu'; supported: 'silu', 'relu2'"),
        (hf_config(eos_token_id="</s>"), r"eos_token_id is \['</s>'\]; it must hold token ids"),
        (hf_config(quantization_config="bitnet"), "quantization_config is 'bitnet'; .*"),
    ],
)
def test_hf_config_errors_name_config_json_and_key(tmp_path, config, message):
    root = write_hf(tmp_path / "hf", config)
    with fails(root / "config.json", message):
        load_model(root, weights="f32")


ROWS = ": a row for each of the 64 tokens of vocab_size"


@pytest.mark.parametrize(
    "name, shape, why",
    [
        (
            "model.embed_tokens.weight",
            (50, HIDDEN),
            ": a row for each of the 64 tokens of vocab_size",
        ),
        ("lm_head.weight", (50, HIDDEN), ": a row for each of the 64 tokens of vocab_size"),
        ("model.layers.0.self_attn.v_proj.weight", (HIDDEN, HIDDEN), ""),
        ("model.layers.0.post_attention_layernorm.weight", (HIDDEN + 1,), ""),
    ],
)
def test_hf_tensor_shapes_name_the_shard(tmp_path, name, shape, why):
    root = write_hf(tmp_path / "hf", hf_config(), {name: np.zeros(shape, np.float32)})
    want = {**hf_tensors()}[name].shape
    with fails(
        root / "model.safetensors",
        f"tensor {name!r} has shape {re.escape(str(shape))}, expected {re.escape(str(want))}{why}",
    ):
        load_model(root, weights="f32")


def test_qwen2_biases_are_checked(tmp_path):
    qs, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    biases = {
        "model.layers.0.self_attn.q_proj.bias": np.zeros(qs, np.float32),
        "model.layers.0.self_attn.k_proj.bias": np.zeros(kv + 1, np.float32),
        "model.layers.0.self_attn.v_proj.bias": np.zeros(kv, np.float32),
    }
    root = write_hf(tmp_path / "hf", hf_config(model_type="qwen2"), biases)
    with fails(
        root / "model.safetensors",
        r"tensor 'model.layers.0.self_attn.k_proj.bias' has shape \(17,\), expected \(16,\)",
    ):
        load_model(root, weights="f32")


@pytest.mark.parametrize(
    "index, message",
    [
        ("{not json", "not a readable JSON file .*"),
        ("[]", "expected a JSON object, found list"),
        ("{}", "weight_map is missing; it must be an object of tensor name -> shard file"),
        ('{"weight_map": {}}', "weight_map is empty; .*"),
        ('{"weight_map": ["model.safetensors"]}', "weight_map is a list; .*"),
        (
            '{"weight_map": {"model.norm.weight": "model-00002.safetensors"}}',
            "weight_map names shard 'model-00002.safetensors', which is not a file in .*",
        ),
        (
            '{"weight_map": {"model.norm.weight": "../model.safetensors"}}',
            "weight_map names shard '../model.safetensors', which is not a file in .*",
        ),
    ],
)
def test_malformed_shard_index_names_the_index(tmp_path, index, message):
    root = write_hf(tmp_path / "hf", hf_config())
    (root / "model.safetensors.index.json").write_text(index)
    with fails(root / "model.safetensors.index.json", message):
        load_model(root, weights="f32")


# ------------------------------------------------------------------ packed directories


def test_packed_config_and_embedding_are_checked(tmp_path):
    save_packed(tiny_decoder(num_layers=1), tmp_path, act_bits=8)
    file = tmp_path / MANIFEST
    manifest = json.loads(file.read_text())

    def write(**config):
        file.write_text(json.dumps({**manifest, "config": {**manifest["config"], **config}}))

    write(num_heads=0)
    with fails(file, "config.num_heads is 0; it must be a positive integer"):
        load_model(tmp_path)
    write(rms_norm_eps=0.0)
    with fails(file, "config.rms_norm_eps is 0.0; it must be a finite number above 0"):
        load_model(tmp_path)
    # 100 tokens for an embedding (and head) of 96 rows.
    write(vocab_size=100)
    with fails(
        file,
        r"embed has shape \[96, 32\], expected \[100, 32\] \(a row for each of the 100 tokens "
        r"of config.vocab_size\)",
    ):
        load_model(tmp_path)
    file.write_text(json.dumps({**manifest, "config": [1]}))
    with fails(file, r"config is \[1\]; expected an object"):
        load_model(tmp_path)


def test_model_config_names_its_fields():
    good = dict(
        vocab_size=10,
        hidden_size=8,
        intermediate_size=8,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
    )
    with pytest.raises(ConfigError, match="^num_heads is 0; it must be a positive integer$"):
        ModelConfig.for_family("llama", **{**good, "num_heads": 0})
    with pytest.raises(ConfigError, match="^head_dim is 5; it must be even"):
        ModelConfig.for_family("llama", **{**good, "head_dim": 5})
    with pytest.raises(ConfigError, match="^rope_theta is inf; it must be a finite number"):
        ModelConfig.for_family("llama", **{**good, "rope_theta": float("inf")})
    c = ModelConfig.for_family("llama", **{**good, "vocab_size": 10.0, "eos_token_ids": [2]})
    assert type(c.vocab_size) is int  # integral JSON floats are accepted as ints


# ------------------------------------------------------------------ chat templates

CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def templated(source: str) -> Tokenizer:
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    return Tokenizer(backend, chat_templates={"default": source}, name="tok.gguf")


def render_within(tok: Tokenizer, seconds: float) -> BaseException | str:
    """apply_chat_template in a worker thread (as the server renders), which must end
    within seconds: what it raised, or its text."""
    result: list = []

    def run() -> None:
        try:
            result.append(tok.apply_chat_template(CHAT))
        except BaseException as e:  # reported to the test
            result.append(e)

    worker = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the template was still rendering after {seconds} s"
    assert time.monotonic() - start < seconds
    return result[0]


def budget_error(tok: Tokenizer, seconds: float = 10.0) -> str:
    e = render_within(tok, seconds)
    assert isinstance(e, ValueError), repr(e)
    msg = str(e)
    assert msg.startswith("tok.gguf: chat template 'default' ") and "\n" not in msg
    return msg


def test_template_huge_range_is_refused():
    """jinja's sandbox raised OverflowError, which callers (the server) did not catch."""
    msg = budget_error(templated("{% for i in range(10**12) %}{{ i }}{% endfor %}"))
    assert "range(1000000000000)" in msg and "size budget of" in msg


@pytest.mark.parametrize(
    "source",
    [
        # 10^10 iterations with no output, no call and no attribute read in the body.
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for m in messages * 100000 %}{{ '' }}"
        "{% endfor %}{% endfor %}",
    ],
)
def test_template_endless_loop_stops_at_the_time_budget(monkeypatch, source):
    monkeypatch.setattr(template_budget, "TEMPLATE_SECONDS", 0.5)
    msg = budget_error(templated(source), seconds=10)
    assert "ran past its time budget of 0.5 s" in msg


def test_template_time_budget_default_holds(monkeypatch):
    """At the default budget too, in a worker thread: a few seconds, not forever."""
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    msg = budget_error(templated(source), seconds=template_budget.TEMPLATE_SECONDS + 8)
    assert f"time budget of {template_budget.TEMPLATE_SECONDS:g} s" in msg


def test_template_recursion_is_an_error_not_a_traceback():
    msg = budget_error(templated("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"))
    assert "recursed too deeply" in msg


@pytest.mark.parametrize(
    "source, what",
    [
        ("{{ 'x' * 10**10 }}", r"a str \* 10000000000"),
        # Doubling: 2^64 characters after 64 steps, with ~ and with +.
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}{{ ns.s }}",
            "a ~ concatenation",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
            "{% endfor %}{{ ns.s }}",
            "a sum",
        ),
        ("{{ 'x'|center(10**10) }}", r"center\(10000000000\)"),
        ("{{ 'x'.ljust(10**10) }}", r"ljust\(10000000000\)"),
        ("{{ '%10000000000d' % 1 }}", "a format width of 10000000000"),
        ("{{ '{:>10000000000}'.format(1) }}", "a format width of 10000000000"),
        ("{{ range(100000)|join('x' * 100000) }}", "a join"),
        ("{{ ('x' * 100000)|replace('x', 'y' * 1000) }}", "a replace"),
        ("{{ 7 ** 1000000 }}", r"7 \*\* 1000000"),
        # Output, a little at a time.
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "produced more than"),
    ],
)
def test_template_size_budget(source, what):
    msg = budget_error(templated(source))
    assert re.search(what, msg), msg
    assert "budget of" in msg


def test_template_python_errors_are_value_errors():
    """A TypeError in a template's expression was a 500 in the server, not a 400."""
    with pytest.raises(ValueError, match="^tok.gguf: chat template failed: TypeError: "):
        templated("{{ 1 + 'a' }}").apply_chat_template(CHAT)


def test_normal_templates_are_unchanged():
    source = (
        "{% for m in messages %}<|im_start|>{{ m['role'] + '\n' + m['content'] }}<|im_end|>\n"
        "{% if loop.last %}{{ '%5d|{:>4}|' % 3 }}{% endif %}{% endfor %}"
        "{{ messages|map(attribute='role')|join(', ') }}|{{ 1700000000|string|center(12) }}|"
        "{{ ('a' ~ 'b') * 3 }}{{ range(3)|list }}"
    )
    text = templated(source).apply_chat_template(CHAT)
    assert text == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
        "    3|{:>4}|user, assistant| 1700000000 |ababab[0, 1, 2]"
    )
    # A long conversation is within every budget (they grow with the input).
    long_chat = [{"role": "user", "content": "x" * 1000}] * 5000
    tok = templated("{% for m in messages %}{{ m['content'] + '\n' }}{% endfor %}")
    assert len(tok.apply_chat_template(long_chat)) == 5000 * 1001
