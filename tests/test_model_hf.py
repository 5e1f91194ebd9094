"""Tiny random HF checkpoints of each family, saved by transformers in the test, loaded
from safetensors by lutlm and compared with transformers' own forward.

With f32 weights the remaining difference is the fp16 KV cache (lutlm's default cache
type): ~1e-3 relative in K and V, bounded here at 2e-3 of the logits' scale. With INT4
or INT8 weights (act_bits=16) the reference runs on the same dequantized weights.
"""

import numpy as np
import pytest

from lutlm.model import ForwardBatch, KVCache, load_model

from .model_assets import transformers_module

CASES = {
    "llama-mha": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 4}),
    "llama-gqa-linear-rope": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {"num_key_value_heads": 2, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    ),
    "qwen2-tied": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"num_key_value_heads": 2, "tie_word_embeddings": True},
    ),
    "qwen2-untied": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"num_key_value_heads": 1, "tie_word_embeddings": False},
    ),
}


def make_checkpoint(tmp_path, case):
    transformers = transformers_module()
    import torch

    cfg_name, model_name, extra = CASES[case]
    cfg = getattr(transformers, cfg_name)(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        **extra,
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(cfg).eval()
    with torch.no_grad():  # q/k/v biases are zero at init: make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def logits_of(model_dir, ids, **kw):
    m = load_model(model_dir, **kw)
    cache = KVCache(m.config, num_blocks=8, block_size=16)
    batch = ForwardBatch.single(ids, 0, [5, 2, 7, 0], 16, all_logits=True)
    return m, m.forward(batch, cache)


@pytest.mark.parametrize("case", list(CASES))
def test_f32_weights_match_transformers(tmp_path, case):
    import torch

    hf = make_checkpoint(tmp_path, case)
    ids = np.random.default_rng(1).integers(0, 300, size=40).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    _, ours = logits_of(tmp_path, ids, weights="f32", head="f32")
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < 2e-3, err
    assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("case", ["llama-gqa-linear-rope", "qwen2-untied"])
@pytest.mark.parametrize("fmt, head", [("int4", "f32"), ("int8", "int8")])
def test_packed_weights_match_reference_on_dequantized_weights(tmp_path, case, fmt, head):
    import torch

    hf = make_checkpoint(tmp_path, case)
    ids = np.random.default_rng(2).integers(0, 300, size=30).tolist()
    m, ours = logits_of(tmp_path, ids, weights=fmt, head=head, act_bits=16)
    c = m.config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    with torch.no_grad():  # give transformers exactly the weights lutlm computes with
        for layer, ours_layer in zip(hf.model.layers, m.layers, strict=True):
            qkv = ours_layer.qkv.weight.dequantize()
            gu = ours_layer.gate_up.weight.dequantize()
            attn, mlp = layer.self_attn, layer.mlp
            attn.q_proj.weight.copy_(torch.from_numpy(qkv[:q]))
            attn.k_proj.weight.copy_(torch.from_numpy(qkv[q : q + kv]))
            attn.v_proj.weight.copy_(torch.from_numpy(qkv[q + kv :]))
            attn.o_proj.weight.copy_(torch.from_numpy(ours_layer.o.weight.dequantize()))
            mlp.gate_proj.weight.copy_(torch.from_numpy(gu[: c.intermediate_size]))
            mlp.up_proj.weight.copy_(torch.from_numpy(gu[c.intermediate_size :]))
            mlp.down_proj.weight.copy_(torch.from_numpy(ours_layer.down.weight.dequantize()))
        if head != "f32":  # both cases are untied: the embedding stays float
            hf.lm_head.weight.copy_(torch.from_numpy(m.lm_head.weight.dequantize()))
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < 3e-3, err


def test_pickled_and_broken_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickled weights are not loaded"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(tmp_path)
    other = tmp_path / "gpt"
    make_checkpoint(other, "llama-mha")
    cfg = (
        (other / "config.json")
        .read_text()
        .replace('"model_type": "llama"', '"model_type": "gpt_neox"')
    )
    (other / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="unsupported model_type 'gpt_neox'"):
        load_model(other)
