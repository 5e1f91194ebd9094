"""Tiny random HF checkpoints of each family, saved by transformers in the test, loaded
from safetensors by lutlm and compared with transformers' own forward.

With f32 weights the remaining difference is the fp16 KV cache (lutlm's default cache
type): ~1e-3 relative in K and V, bounded here at 2e-3 of the logits' scale. With INT4
or INT8 weights (act_bits=16) the reference runs on the same dequantized weights. bf16
checkpoints are compared with transformers in f32 on the same bf16 values; packed
BitNet b1.58 checkpoints with transformers' own BitNet quantizer (see
test_bitnet_packed_matches_transformers for its bound).
"""

import json

import numpy as np
import pytest

from lutlm.formats.safetensors_dir import HFModelDir
from lutlm.model import ForwardBatch, KVCache, load_model
from lutlm.model.linear import Linear
from lutlm.quant import TernaryWeight

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
    # Float (unpacked) BitNet: relu² and the attention/FFN sub-norms, weights= applies.
    "bitnet-float": (
        "BitNetConfig",
        "BitNetForCausalLM",
        {"num_key_value_heads": 2, "bos_token_id": 1, "eos_token_id": 2},
    ),
}


def make_model(case):
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
    with torch.no_grad():  # q/k/v biases are zero and norms one at init: make them matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
            elif "norm" in name:
                p.normal_(1, 0.1)
    return model


def make_checkpoint(tmp_path, case):
    model = make_model(case)
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


def test_bf16_checkpoint_matches_transformers(tmp_path):
    """bfloat16 safetensors (several shards) widen to exactly torch's float32 values,
    and the model matches transformers run in f32 on those values (the f32 bound)."""
    import torch

    hf = make_model("llama-gqa-linear-rope").to(torch.bfloat16)
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    hf = hf.float()
    state = hf.state_dict()
    d = HFModelDir(tmp_path)
    for name in d.where:
        assert d.tensor(name)[0] == "BF16"
        np.testing.assert_array_equal(d.float32(name), state[name].numpy())
    ids = np.random.default_rng(3).integers(0, 300, size=40).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    _, ours = logits_of(tmp_path, ids, weights="f32", head="f32")
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 2e-3


BITNET = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)


def eager_bitnet():
    """transformers' BitNet unpack and activation quantization are @torch.compile'd;
    eager runs the same operations without compiling (seconds, not half a minute)."""
    import torch

    return torch._dynamo.config.patch(disable=True)


def make_bitnet_checkpoint(path, linear_class="bitlinear"):
    """A tiny BitNet b1.58 checkpoint laid out as transformers loads one: each linear's
    random ternary weight packed by transformers' own pack_weights (uint8 [N/4, K]) with
    a weight_scale of its own (w = t / scale for BitLinear, t * scale for AutoBitLinear),
    norms away from one so that the sub-norms matter."""
    transformers = transformers_module()
    import torch
    from safetensors.torch import save_file
    from transformers.integrations.bitnet import pack_weights, unpack_weights

    cfg = transformers.BitNetConfig(**BITNET)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, p in transformers.BitNetForCausalLM(cfg).state_dict().items():
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            t = torch.randint(-1, 2, p.shape, generator=g)
            tensors[name] = pack_weights(t.clone())  # adds 1 in place
            with eager_bitnet():
                assert torch.equal(unpack_weights(tensors[name], torch.float32), t.float())
            # |w| ~ 1/30: the blocks' outputs about the size of the residual stream.
            scale = 20 + 20 * torch.rand(1, generator=g)
            tensors[name.removesuffix("weight") + "weight_scale"] = (
                scale if linear_class == "bitlinear" else 1 / scale
            )
        elif "norm" in name:
            tensors[name] = 1 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            tensors[name] = p.contiguous()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = cfg.to_dict()
    config["quantization_config"] = {
        "quant_method": "bitnet",
        "linear_class": linear_class,
        "quantization_mode": "offline",
    }
    (path / "config.json").write_text(json.dumps(config))


def bitnet_reference(path, **kw):
    import torch

    transformers = transformers_module()
    with eager_bitnet():
        return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw)


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_bitnet_packed_weights_load_exactly(tmp_path, linear_class):
    """Every linear is ternary (whatever weights= says) with the values transformers
    computes with: BitLinear unpacks its uint8 buffer and divides by weight_scale;
    AutoBitLinear unpacks at load and multiplies."""
    import torch
    from transformers.integrations.bitnet import unpack_weights

    make_bitnet_checkpoint(tmp_path, linear_class)
    m = load_model(tmp_path, weights="int4")
    hf = bitnet_reference(tmp_path)

    def effective(mod) -> np.ndarray:
        if linear_class == "bitlinear":
            with eager_bitnet():
                return (unpack_weights(mod.weight, torch.float32) / mod.weight_scale).numpy()
        return (mod.weight * mod.weight_scale).detach().numpy()

    for ours, layer in zip(m.layers, hf.model.layers, strict=True):
        attn, mlp = layer.self_attn, layer.mlp
        for lin, mods in (
            (ours.qkv, (attn.q_proj, attn.k_proj, attn.v_proj)),
            (ours.o, (attn.o_proj,)),
            (ours.gate_up, (mlp.gate_proj, mlp.up_proj)),
            (ours.down, (mlp.down_proj,)),
        ):
            assert isinstance(lin.weight, TernaryWeight)
            want = np.concatenate([effective(mod) for mod in mods])
            np.testing.assert_array_equal(lin.weight.dequantize(), want)


def test_bitnet_unpacked_autobitlinear_weights_keep_their_scale(tmp_path):
    """AutoBitLinear also takes float (unpacked) weights and still multiplies by
    weight_scale: those load through weights= (here f32) with the scale applied."""
    from safetensors.numpy import load_file, save_file

    from lutlm.formats.safetensors_dir import unpack_bitnet

    make_bitnet_checkpoint(tmp_path, "autobitlinear")
    file = tmp_path / "model.safetensors"
    tensors = load_file(file)
    for name, t in tensors.items():
        if t.dtype == np.uint8:
            tensors[name] = unpack_bitnet(t).astype(np.float32) - 1
    save_file(tensors, file)
    m = load_model(tmp_path, weights="f32")
    attn = bitnet_reference(tmp_path).model.layers[1].self_attn
    assert attn.o_proj.weight.dtype.is_floating_point
    want = (attn.o_proj.weight * attn.o_proj.weight_scale).detach().numpy()
    np.testing.assert_array_equal(m.layers[1].o.weight, want)


def test_bitnet_packed_matches_transformers(tmp_path, monkeypatch):
    """A packed BitNet checkpoint against transformers' BitNet on the same directory.

    Both sides quantize each token's activations to int8 by absmax before every ternary
    linear and add the products as integers, exactly: lutlm's MAD kernels (bound here:
    the LUT kernels that small batches use quantize pair sums instead). The reference
    attends over K and V rounded to fp16, as lutlm's cache holds them. What remains is
    fp32 rounding in norms, attention and scales, ~1e-6 of the logits' scale: asserted
    below 1e-5. Unless an activation lies within that rounding of an int8 rounding
    boundary (torch even computes 127/amax as 127 * (1/amax), an ulp off lutlm's
    quotient in a quarter of rows): then the sides round it one step apart. That step
    is activation-quantization noise and spreads like it, to its token and, through
    attention, every later one; from the first such token on, the bound is that noise:
    how far the reference moves when its activations are not quantized at all. The test
    finds that token from both sides' int8 activations.
    """
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.bitnet import BitLinear
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def fp16_cache(module, q, k, v, *args, **kw):
        return sdpa_attention_forward(module, q, k.half().float(), v.half().float(), *args, **kw)

    AttentionInterface.register("lutlm_fp16_kv", fp16_cache)
    make_bitnet_checkpoint(tmp_path)
    ids = np.random.default_rng(4).integers(0, 300, size=60).tolist()

    ours_x = []  # every Linear's input, in call order (qkv, o, gate_up, down per layer)
    call = Linear.__call__

    def recording(self, x):
        ours_x.append(x.copy())
        return call(self, x)

    monkeypatch.setattr(Linear, "__call__", recording)
    m = load_model(tmp_path, head="f32")  # transformers keeps BitNet's head in float
    for layer in m.layers:  # MAD at any batch size: BitNet's activation quantization
        for lin in (layer.qkv, layer.o, layer.gate_up, layer.down):
            lin._gemm = lin.weight.kernel(method="mad")
    ours = m.forward(
        ForwardBatch.single(ids, 0, [5, 2, 7, 0], 16, all_logits=True),
        KVCache(m.config, num_blocks=8, block_size=16),
    )

    hf = bitnet_reference(tmp_path, attn_implementation="lutlm_fp16_kv")
    hf_x8 = []  # the reference's own int8 activations, same order

    def quantized(mod, args):
        hf_x8.append(mod.activation_quant(args[0][0])[0].numpy())

    hooks = []
    for layer in hf.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for mod in (attn.q_proj, attn.o_proj, mlp.gate_proj, mlp.down_proj):
            hooks.append(mod.register_forward_pre_hook(quantized))
    with eager_bitnet(), torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
        for h in hooks:
            h.remove()
        for mod in hf.modules():
            if isinstance(mod, BitLinear):
                mod.activation_quant = lambda x, num_bits=8: (x, torch.ones_like(x[..., :1]))
        unquantized = hf(torch.tensor([ids])).logits[0].numpy()

    first = len(ids)  # first token whose int8 activations differ anywhere
    for x, want in zip(ours_x, hf_x8, strict=False):  # ours_x ends with the f32 head
        amax = np.abs(x).max(axis=1, keepdims=True)  # csrc/gemm.cpp quantize_row:
        x8 = np.clip(np.rint(x * (np.float32(127) / amax)), -127, 127)
        rows = np.flatnonzero((x8 != want).any(axis=1))
        if rows.size:
            first = min(first, int(rows[0]))
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max(axis=1) / scale
    noise = np.abs(unquantized - ref).max() / scale
    assert noise > 1e-3  # int8 activations are visible at all in the logits
    assert err[:first].max(initial=0) < 1e-5, (first, err[:first].max())
    assert err[first:].max(initial=0) <= noise, (first, err[first:].max(), noise)


def test_bitnet_packed_errors(tmp_path):
    from safetensors.numpy import load_file, save_file

    make_bitnet_checkpoint(tmp_path)
    file = tmp_path / "model.safetensors"
    good = load_file(file)
    q, down = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"

    def broken(**changes):
        tensors = {**good, **changes}
        save_file({k: v for k, v in tensors.items() if v is not None}, file)
        return pytest.raises(ValueError)

    with broken(**{q: good[q][:-1]}) as e:  # N/4 - 1 packed rows
        load_model(tmp_path)
    msg = str(e.value)
    assert str(file) in msg and f"{q!r} is uint8 (15, 64), expected (16, 64)" in msg
    with broken(**{down.removesuffix("weight") + "weight_scale": None}) as e:
        load_model(tmp_path)
    assert str(file) in str(e.value) and f"{down!r} has no" in str(e.value)
    with broken(**{q: np.full_like(good[q], 0xFF)}) as e:  # code 3: not ternary
        load_model(tmp_path)
    assert str(file) in str(e.value) and "code 3" in str(e.value)
    save_file(good, file)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["use_rms_norm"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="use_rms_norm"):
        load_model(tmp_path)
