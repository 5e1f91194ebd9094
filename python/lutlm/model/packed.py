"""A Decoder to and from a packed directory (formats/packed.py: `lutlm quantize` output).

The manifest records, besides the file format's frame: the ModelConfig fields, act_bits,
the embedding's and norms' keys, and per linear its format (a row of quant.FORMATS: its
"kind"), shape, the row's own fields (group size, INT4 layout) and the key of each
array the row stores. Loading checks every array's dtype and shape against what the
manifest and config imply (the row's declared arrays) before any is used; nothing is
converted, so the logits are bit-identical to loading the source.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from lutlm.formats.packed import (
    MANIFEST,
    WEIGHTS,
    MappedSafetensors,
    read_manifest,
    write_packed,
)
from lutlm.model.decoder import Decoder, LayerWeights
from lutlm.model_config import ConfigError, ModelConfig
from lutlm.quant import FORMATS, Embedding, Linear, format_of
from lutlm.quant._common import GROUP_SIZES

# Manifest keys of a linear that are not its row's own fields.
_LINEAR_KEYS = ("kind", "shape", "arrays", "bias")


def save_packed(model: Decoder, out: str | Path, act_bits: int) -> None:
    """Write model's arrays to out/model.safetensors and the manifest out/lutlm.json.

    Args:
        model: the decoder, on the CPU backend (its weights are the host arrays).
        out: an existing directory.
        act_bits: the activation precision it was quantized for, recorded in the manifest
            (each load still chooses its own: it does not change the stored arrays).

    Raises:
        ValueError: a weight of no format in quant.FORMATS.
    """
    arrays: dict[str, np.ndarray] = {}

    def put(key: str, a: np.ndarray) -> str:
        arrays[key] = np.ascontiguousarray(a)  # save_file reads the buffer as laid out
        return key

    def linear(prefix: str, lin: Linear) -> dict[str, Any]:
        w = lin.weight
        try:
            row = format_of(w)
        except TypeError:
            raise ValueError(
                f"cannot write a weight of type {type(w).__name__} to a packed model"
            ) from None
        row_fields, held = row.stored(w)
        entry: dict[str, Any] = {"kind": row.name, "shape": list(w.shape), **row_fields}
        entry["arrays"] = {n: put(f"{prefix}.{n}", a) for n, a in held.items()}
        if lin.bias is not None:
            entry["bias"] = put(f"{prefix}.bias", lin.bias)
        return entry

    layers = []
    for i, layer in enumerate(model.layers):
        entry: dict[str, Any] = {}
        for f in fields(LayerWeights):
            value = getattr(layer, f.name)
            if isinstance(value, Linear):
                entry[f.name] = linear(f"layers.{i}.{f.name}", value)
            elif value is not None:
                entry[f.name] = put(f"layers.{i}.{f.name}", value)
        layers.append(entry)
    manifest = {
        "config": asdict(model.config),
        "act_bits": act_bits,
        "embed": {"key": put("embed", model.embed.weight), "shape": list(model.embed.shape)},
        "final_norm": put("final_norm", model.final_norm),
        "lm_head": linear("lm_head", model.lm_head),
        "layers": layers,
    }
    write_packed(out, manifest, arrays)


def load_packed(path: str | Path, act_bits: int = 8) -> Decoder:
    """The Decoder of a packed directory, its arrays mapped from model.safetensors.

    Args:
        path: a directory written by `lutlm quantize`.
        act_bits: activation precision of INT4 and INT8 layers (8 or 16).

    Raises:
        ValueError: an unknown manifest version, a malformed manifest, or an array that
            is missing, truncated or of the wrong shape or dtype, naming the file and key.
    """
    path = Path(path)
    mfile = path / MANIFEST
    manifest = read_manifest(path)
    raw_config = manifest.get("config")
    if not isinstance(raw_config, dict):
        raise ValueError(f"{mfile}: config is {raw_config!r}; expected an object")
    try:
        config = ModelConfig(**raw_config)
    except ConfigError as e:
        keys = {f.name: f"config.{f.name}" for f in fields(ModelConfig)}
        raise ValueError(f"{mfile}: {e.naming(keys)}") from None
    except TypeError as e:  # a missing or unknown field
        raise ValueError(f"{mfile}: bad config ({e})") from e
    reader = _Reader(MappedSafetensors(path / WEIGHTS), mfile, config, act_bits)
    try:
        return reader.decoder(manifest)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{mfile}: malformed manifest ({type(e).__name__}: {e})") from e


class _Reader:
    """Builds a Decoder from a manifest, checking each part against the config."""

    def __init__(
        self, arrays: MappedSafetensors, mfile: Path, config: ModelConfig, act_bits: int
    ) -> None:
        self.arrays, self.mfile, self.config, self.act_bits = arrays, mfile, config, act_bits
        c = config
        D, F = c.hidden_size, c.intermediate_size
        qs, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        # What the decoder computes with each layer array: linears (N, K), vectors length.
        self.linear_shapes = {
            "qkv": (qs + 2 * kv, D),
            "o": (D, qs),
            "gate_up": (2 * F, D),
            "down": (D, F),
        }
        self.vector_sizes = {"attn_norm": D, "ffn_norm": D, "attn_sub_norm": qs, "ffn_sub_norm": F}

    def decoder(self, manifest: dict[str, Any]) -> Decoder:
        c, mfile = self.config, self.mfile
        if len(manifest["layers"]) != c.num_layers:
            raise ValueError(
                f"{mfile}: {len(manifest['layers'])} layers listed, the config has {c.num_layers}"
            )
        layers = [self.layer(i, entry) for i, entry in enumerate(manifest["layers"])]
        embed, D = manifest["embed"], c.hidden_size
        # One embedding row and one logit per token: fewer would fail at generation.
        if list(embed["shape"]) != [c.vocab_size, D]:
            raise ValueError(
                f"{mfile}: embed has shape {embed['shape']}, expected {[c.vocab_size, D]} (a "
                f"row for each of the {c.vocab_size} tokens of config.vocab_size)"
            )
        return Decoder(
            c,
            Embedding(self.arrays.get(embed["key"], np.float32, (c.vocab_size, D))),
            layers,
            self.arrays.get(manifest["final_norm"], np.float32, (D,)),
            self.linear("lm_head", manifest["lm_head"], c.vocab_size, D),
        )

    def layer(self, i: int, entry: dict[str, Any]) -> LayerWeights:
        parts: dict[str, Any] = {}
        for role, value in entry.items():
            if role in self.linear_shapes:
                parts[role] = self.linear(f"layers.{i}.{role}", value, *self.linear_shapes[role])
            elif role in self.vector_sizes:
                parts[role] = self.arrays.get(value, np.float32, (self.vector_sizes[role],))
            else:
                raise ValueError(f"{self.mfile}: layer {i} has an unknown part {role!r}")
        return LayerWeights(**parts)

    def linear(self, name: str, entry: dict[str, Any], N: int, K: int) -> Linear:
        mfile = self.mfile
        kind, shape = entry["kind"], tuple(entry["shape"])
        if kind not in FORMATS:
            raise ValueError(f"{mfile}: {name} has kind {kind!r}, expected one of {tuple(FORMATS)}")
        if shape != (N, K):
            raise ValueError(f"{mfile}: {name} has shape {shape}, expected {(N, K)}")
        row_fields = {k: v for k, v in entry.items() if k not in _LINEAR_KEYS}
        group_size = row_fields.setdefault("group_size", 32)
        if group_size not in GROUP_SIZES:
            raise ValueError(f"{mfile}: {name} has group_size {group_size}, not in {GROUP_SIZES}")
        row, keys = FORMATS[kind], entry["arrays"]
        a = {
            n: self.arrays.get(keys[n], dtype, want)
            for n, (dtype, want) in row.arrays(N, K, group_size).items()
            if n in keys or n not in row.optional_arrays
        }
        try:
            w = row.from_stored(a, (N, K), row_fields)
        except ValueError as e:
            raise ValueError(f"{mfile}: {name} {e}") from None
        bias = entry.get("bias")
        if bias is not None:
            bias = self.arrays.get(bias, np.float32, (N,))
        elif self.config.qkv_bias and name.endswith(".qkv"):
            raise ValueError(f"{mfile}: {name} has no bias, but config.qkv_bias is true")
        return Linear(w, bias, self.act_bits)
