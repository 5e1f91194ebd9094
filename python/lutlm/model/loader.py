"""Loading a model file into a Decoder; the tensor-name map and fusions live here."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lutlm.formats.gguf import GGUFModelFile
from lutlm.formats.packed import is_packed
from lutlm.formats.safetensors_dir import BITNET_PACKED, HFModelDir
from lutlm.model.decoder import Decoder, Embedding, LayerWeights
from lutlm.model.linear import (
    WEIGHT_FORMATS,
    Linear,
    PackedWeight,
    fuse_gguf_linear,
    quantize_dense,
)
from lutlm.model.packed import load_packed
from lutlm.model_config import ModelConfig
from lutlm.quant import FORMATS, TernaryWeight

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
GGUF_GLOBAL = {"embed": "token_embd.weight", "norm": "output_norm.weight", "head": "output.weight"}
HF_LAYER = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "q": "model.layers.{i}.self_attn.q_proj.weight",
    "k": "model.layers.{i}.self_attn.k_proj.weight",
    "v": "model.layers.{i}.self_attn.v_proj.weight",
    "o": "model.layers.{i}.self_attn.o_proj.weight",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": "model.layers.{i}.mlp.gate_proj.weight",
    "up": "model.layers.{i}.mlp.up_proj.weight",
    "down": "model.layers.{i}.mlp.down_proj.weight",
    "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
    "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
    "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
    "attn_sub_norm": "model.layers.{i}.self_attn.attn_sub_norm.weight",
    "ffn_sub_norm": "model.layers.{i}.mlp.ffn_sub_norm.weight",
}
HF_GLOBAL = {
    "embed": "model.embed_tokens.weight",
    "norm": "model.norm.weight",
    "head": "lm_head.weight",
}
FUSED = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
HEAD_FORMATS = ("int8", "int4", "f32")


def load_model(
    path: str | Path,
    weights: str = "int4",
    head: str = "int8",
    act_bits: int = 8,
    progress: bool = False,
) -> Decoder:
    """Load a model file into a Decoder.

    Args:
        path: a .gguf file, an HF directory (config.json + *.safetensors) or a packed
            directory written by `lutlm quantize` (its arrays are mapped, not converted;
            weights and head were fixed when it was written and are ignored here).
        weights: format for linear weights that are not already INT4/INT8/ternary in
            the file: "int4" (group 32), "int8" (group 32), "ternary" or "f32".
        head: format of the LM head (tied or not): "int8" (default: a GGUF Q8_0 tensor
            imported exactly, others quantized like Q8_0; a quarter of the f32 head's
            bytes, and on SmolLM2-135M the same 100 % top-1 agreement with the fp32
            reference as "f32" at act_bits 16), "f32", or "int4" (costs SmolLM2-135M
            about 15 points of agreement).
        act_bits: activation precision of INT4 and INT8 layers: 8 (int8 per group of
            32, as GGUF runtimes do) or 16 (two int8 passes; ~2x prefill cost,
            reference-grade).
        progress: show a progress bar over the layers being packed.

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
    if is_packed(path):
        return load_packed(path, act_bits)
    if path.is_dir():
        return _build(HFModelDir(path), HF_LAYER, HF_GLOBAL, weights, head, act_bits, progress)
    if path.suffix in (".bin", ".pt", ".pth"):
        raise ValueError(
            f"{path}: pickled weights are not loaded (unpickling runs code); convert to "
            "safetensors (transformers: save_pretrained(..., safe_serialization=True)) or GGUF"
        )
    if path.suffix != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file")
    return _build(GGUFModelFile(path), GGUF_LAYER, GGUF_GLOBAL, weights, head, act_bits, progress)


def _build(
    f: GGUFModelFile | HFModelDir,
    layer_names: dict[str, str],
    global_names: dict[str, str],
    weights: str,
    head: str,
    act_bits: int,
    progress: bool,
) -> Decoder:
    config = f.config()
    c = config
    _check_shapes(f, c, layer_names, global_names)

    def linear(role: str, i: int) -> Linear:
        names = [layer_names[p].format(i=i) for p in FUSED.get(role, (role,))]
        parts = [f.tensor(n) for n in names]
        if all(kind == BITNET_PACKED for kind, _, _ in parts):  # exact whatever `weights`
            t, scales = zip(*(f.ternary(n) for n in names), strict=True)
            w: PackedWeight = TernaryWeight.pack(np.concatenate(t), np.concatenate(scales))
        else:
            w = fuse_gguf_linear(parts, [partial(f.float32, n) for n in names], weights)
        bias = None
        if role == "qkv" and c.qkv_bias:
            bias = np.concatenate(
                [f.float32(layer_names[b].format(i=i)) for b in ("q_bias", "k_bias", "v_bias")]
            )
        return Linear(w, bias, act_bits)

    def optional(role: str, i: int) -> np.ndarray | None:
        name = layer_names[role].format(i=i)
        return f.float32(name) if f.has(name) else None

    layers = []
    for i in tqdm(range(c.num_layers), "packing layers", unit="layer", disable=not progress):
        fmt = partial(str.format, i=i)
        layers.append(
            LayerWeights(
                attn_norm=f.float32(fmt(layer_names["attn_norm"])),
                qkv=linear("qkv", i),
                o=linear("o", i),
                ffn_norm=f.float32(fmt(layer_names["ffn_norm"])),
                gate_up=linear("gate_up", i),
                down=linear("down", i),
                attn_sub_norm=optional("attn_sub_norm", i) if c.sub_norms else None,
                ffn_sub_norm=optional("ffn_sub_norm", i) if c.sub_norms else None,
            )
        )
    embed_f32 = f.float32(global_names["embed"])
    tied = c.tie_word_embeddings or not f.has(global_names["head"])
    head_name = global_names["embed"] if tied else global_names["head"]

    def head_weight() -> PackedWeight:
        kind, shape, data = f.tensor(head_name)
        row = FORMATS[head]
        if kind in row.gguf_types and row.from_gguf is not None:  # held exactly (Q8_0 -> int8)
            return row.from_gguf([(kind, shape, data)])
        return quantize_dense(embed_f32 if tied else f.float32(head_name), head)

    lm_head = Linear(head_weight(), act_bits=act_bits)
    return Decoder(config, Embedding(embed_f32), layers, f.float32(global_names["norm"]), lm_head)


def _check_shapes(
    f: GGUFModelFile | HFModelDir,
    c: ModelConfig,
    layer_names: dict[str, str],
    global_names: dict[str, str],
) -> None:
    """Check every tensor the decoder reads against the config, from the files' headers,
    before anything is converted: a wrong shape is named at load, not met as an
    IndexError at generation or a kernel's error in the middle of a forward.

    Raises:
        ValueError: a missing tensor or one of the wrong shape, naming the file, the
            tensor and the shape the config implies.
    """
    D, F = c.hidden_size, c.intermediate_size
    qs, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    vocab_key = f.config_keys.get("vocab_size", "vocab_size")
    rows = f"a row for each of the {c.vocab_size} tokens of {vocab_key}"
    layer_shapes: dict[str, tuple[int, ...]] = {
        "attn_norm": (D,),
        "q": (qs, D),
        "k": (kv, D),
        "v": (kv, D),
        "o": (D, qs),
        "ffn_norm": (D,),
        "gate": (F, D),
        "up": (F, D),
        "down": (D, F),
    }
    if c.qkv_bias:
        layer_shapes.update(q_bias=(qs,), k_bias=(kv,), v_bias=(kv,))
    optional = {"attn_sub_norm": (qs,), "ffn_sub_norm": (F,)} if c.sub_norms else {}

    def check(name: str, shape: tuple[int, ...], why: str = "") -> None:
        kind, got, _ = f.tensor(name)
        if got == shape:
            return
        if kind == BITNET_PACKED:  # stored [N/4, K]: say so
            raise ValueError(
                f"{f.file_of(name)}: BitNet tensor {name!r} is uint8 {(got[0] // 4, got[1])}, "
                f"expected ({shape[0] / 4:g}, {shape[1]}): {shape} packed 4 rows per byte"
            )
        raise ValueError(
            f"{f.file_of(name)}: tensor {name!r} has shape {got}, expected {shape}{why}"
        )

    for i in range(c.num_layers):
        for role, shape in layer_shapes.items():
            check(layer_names[role].format(i=i), shape)
        for role, shape in optional.items():
            if f.has(layer_names[role].format(i=i)):
                check(layer_names[role].format(i=i), shape)
    check(global_names["embed"], (c.vocab_size, D), f": {rows}")
    check(global_names["norm"], (D,))
    if not c.tie_word_embeddings and f.has(global_names["head"]):
        check(global_names["head"], (c.vocab_size, D), f": {rows}")
