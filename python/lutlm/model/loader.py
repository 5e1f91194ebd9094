"""Loading a model file into a Decoder; the tensor-name map and fusions live here."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from lutlm.formats.gguf import GGUFModelFile
from lutlm.model.decoder import Decoder, Embedding, LayerWeights
from lutlm.model.linear import WEIGHT_FORMATS, Linear, fuse_gguf_linear, quantize_dense

# GGUF tensor names of one layer, and which are stacked into one weight.
GGUF_LAYER = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "q": "blk.{i}.attn_q.weight",
    "k": "blk.{i}.attn_k.weight",
    "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "gate": "blk.{i}.ffn_gate.weight",
    "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
    "q_bias": "blk.{i}.attn_q.bias",
    "k_bias": "blk.{i}.attn_k.bias",
    "v_bias": "blk.{i}.attn_v.bias",
    "attn_sub_norm": "blk.{i}.attn_sub_norm.weight",
    "ffn_sub_norm": "blk.{i}.ffn_sub_norm.weight",
}
FUSED = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
HEAD_FORMATS = ("int4", "f32")


def load_model(
    path: str | Path, weights: str = "int4", head: str = "f32", act_bits: int = 8
) -> Decoder:
    """Load a model file into a Decoder.

    Args:
        path: a .gguf file.
        weights: format for linear weights that are not already INT4/ternary in the
            file: "int4" (group 32), "ternary" or "f32".
        head: format of the LM head (tied or not): "f32" (default: an INT4 head costs
            SmolLM2-135M about 15 points of top-1 agreement with the fp32 reference)
            or "int4".
        act_bits: activation precision of INT4 layers: 8 (int8 per group of 32, as
            GGUF runtimes do) or 16 (two int8 passes; ~2x prefill cost, reference-grade).

    Raises:
        ValueError: unsupported file, architecture, tensor type or option.
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    if head not in HEAD_FORMATS:
        raise ValueError(f"head must be one of {HEAD_FORMATS}, got {head!r}")
    if act_bits not in (8, 16):
        raise ValueError(f"act_bits must be 8 or 16, got {act_bits}")
    path = Path(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        raise ValueError(
            f"{path}: pickled weights are not loaded (unpickling runs code); convert to "
            "safetensors (transformers: save_pretrained(..., safe_serialization=True)) or GGUF"
        )
    if path.suffix != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file")
    return _load_gguf(GGUFModelFile(path), weights, head, act_bits)


def _load_gguf(f: GGUFModelFile, weights: str, head: str, act_bits: int) -> Decoder:
    config = f.config()
    c = config

    def check(name: str, shape: tuple[int, ...]) -> None:
        got = f.tensor(name)[1]
        if got != shape:
            raise ValueError(f"{f.path}: tensor {name!r} has shape {got}, expected {shape}")

    def linear(role: str, i: int) -> Linear:
        names = [GGUF_LAYER[p].format(i=i) for p in FUSED.get(role, (role,))]
        parts = [f.tensor(n) for n in names]
        w = fuse_gguf_linear(parts, [partial(f.float32, n) for n in names], weights)
        bias = None
        if role == "qkv" and c.qkv_bias:
            bias = np.concatenate(
                [f.float32(GGUF_LAYER[b].format(i=i)) for b in ("q_bias", "k_bias", "v_bias")]
            )
        return Linear(w, bias, act_bits)

    def optional(role: str, i: int) -> np.ndarray | None:
        name = GGUF_LAYER[role].format(i=i)
        return f.float32(name) if name in f.tensors else None

    D, kv = c.hidden_size, c.num_kv_heads * c.head_dim
    layers = []
    for i in range(c.num_layers):
        fmt = partial(str.format, i=i)
        check(fmt(GGUF_LAYER["q"]), (c.num_heads * c.head_dim, D))
        check(fmt(GGUF_LAYER["k"]), (kv, D))
        check(fmt(GGUF_LAYER["v"]), (kv, D))
        check(fmt(GGUF_LAYER["gate"]), (c.intermediate_size, D))
        check(fmt(GGUF_LAYER["down"]), (D, c.intermediate_size))
        layers.append(
            LayerWeights(
                attn_norm=f.float32(fmt(GGUF_LAYER["attn_norm"])),
                qkv=linear("qkv", i),
                o=linear("o", i),
                ffn_norm=f.float32(fmt(GGUF_LAYER["ffn_norm"])),
                gate_up=linear("gate_up", i),
                down=linear("down", i),
                attn_sub_norm=optional("attn_sub_norm", i) if c.sub_norms else None,
                ffn_sub_norm=optional("ffn_sub_norm", i) if c.sub_norms else None,
            )
        )
    embed_f32 = f.float32("token_embd.weight")
    if embed_f32.shape[1] != D:
        raise ValueError(
            f"{f.path}: token_embd.weight has shape {embed_f32.shape}, expected (vocab, {D})"
        )
    head_src = embed_f32 if c.tie_word_embeddings else f.float32("output.weight")
    lm_head = Linear(quantize_dense(head_src, head), act_bits=act_bits)
    return Decoder(config, Embedding(embed_f32), layers, f.float32("output_norm.weight"), lm_head)
