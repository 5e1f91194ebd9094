"""Packed models (`lutlm quantize`): a Decoder's arrays written once, mapped at load.

A packed directory holds:

- ``model.safetensors``: every array of the Decoder exactly as the kernels take it
  (packed codes, fp16 scales as uint16 bits, float32 norms, biases, embedding, head);
- ``lutlm.json``: the manifest: format version, the ModelConfig fields, act_bits, the
  embedding's and norms' keys, and per linear its kind, shape, group size, INT4 layout and
  the safetensors key of each array;
- the tokenizer files, read by ``Tokenizer.from_pretrained``.

Loading maps model.safetensors once, read-only, and views each array at the offset its
header gives: nothing is converted or copied, so a load costs about the header parse and
pages are read when a forward first touches them. safetensors' ``safe_open`` is not used
for reading because its numpy ``get_tensor`` copies each tensor into a new array.
The kernels only read weights, so read-only arrays are fine.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from dataclasses import asdict, fields
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from lutlm import _C
from lutlm.model.config import ConfigError, ModelConfig
from lutlm.model.decoder import Decoder, Embedding, LayerWeights
from lutlm.model.linear import Linear, PackedWeight
from lutlm.quant import Int4Weight, Int8Weight, TernaryWeight
from lutlm.quant._common import GROUP_SIZES
from lutlm.quant.int4 import LAYOUTS
from lutlm.tokenizer import Tokenizer

MANIFEST = "lutlm.json"
WEIGHTS = "model.safetensors"
FORMAT = "lutlm-packed"
VERSION = 1
LINEAR_KINDS = ("int4", "int8", "ternary", "f32")
# An HF source's tokenizer, copied as is. config.json comes too: Tokenizer.from_pretrained
# reads eos/bos ids from it.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "config.json",
)
_DTYPE_NAMES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int8): "I8",
}


def is_packed(path: str | Path) -> bool:
    """Whether path is a directory written by `lutlm quantize`."""
    return (Path(path) / MANIFEST).is_file()


def quantize(
    src: str | Path,
    out: str | Path,
    weights: str = "int4",
    head: str = "int8",
    act_bits: int = 16,
) -> Path:
    """Load src (anything load_model accepts) and write it packed to the directory out.

    Args:
        src: a .gguf file, an HF directory or a packed directory.
        out: the output directory, new or empty.
        weights, head: as for load_model; fixed in the output.
        act_bits: recorded in the manifest; a load still chooses its own.

    Returns:
        out.

    Raises:
        ValueError: a bad source or option, or out exists and is not empty.
    """
    from lutlm.model.loader import load_model  # the loader imports this module

    src, out = Path(src), Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty directory; choose a new one")
    # Tokenizer first: a source without one fails before the long conversion.
    tokenizer = None if src.is_dir() else Tokenizer.from_gguf(src)
    # Written in a sibling directory and renamed: a failed run leaves nothing at out.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    tmp.mkdir(parents=True)
    try:
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        else:
            for name in TOKENIZER_FILES:
                if (src / name).is_file():
                    shutil.copyfile(src / name, tmp / name)
        model = load_model(src, weights, head, act_bits, progress=True)
        save_packed(model, tmp, act_bits)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_packed(model: Decoder, out: str | Path, act_bits: int) -> None:
    """Write model's arrays to out/model.safetensors and the manifest out/lutlm.json.

    Args:
        model: the decoder.
        out: an existing directory.
        act_bits: the activation precision it was quantized for, recorded in the manifest
            (each load still chooses its own: it does not change the stored arrays).

    Raises:
        ValueError: a weight type this format has no kind for.
    """
    out = Path(out)
    arrays: dict[str, np.ndarray] = {}

    def put(key: str, a: np.ndarray) -> str:
        arrays[key] = np.ascontiguousarray(a)  # save_file reads the buffer as laid out
        return key

    def linear(prefix: str, lin: Linear) -> dict[str, Any]:
        w = lin.weight
        kind = _kind(w)
        entry: dict[str, Any] = {"kind": kind, "shape": list(w.shape)}
        group_size = getattr(w, "group_size", None)  # INT4 and INT8 only
        if group_size is not None:
            entry["group_size"] = group_size
        if kind == "int4":
            entry["layout"] = w.layout
        names = _linear_arrays(kind, *w.shape, group_size or 32)
        held = {"w": w} if kind == "f32" else {n: getattr(w, n) for n in names}
        entry["arrays"] = {n: put(f"{prefix}.{n}", a) for n, a in held.items() if a is not None}
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
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(model.config),
        "act_bits": act_bits,
        "embed": {"key": put("embed", model.embed.weight), "shape": list(model.embed.shape)},
        "final_norm": put("final_norm", model.final_norm),
        "lm_head": linear("lm_head", model.lm_head),
        "layers": layers,
    }
    save_file(arrays, out / WEIGHTS)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    # safetensors creates its file owner-only (0600); give it the umask's mode, as the rest.
    shutil.copymode(out / MANIFEST, out / WEIGHTS)


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
    try:
        manifest = json.loads(mfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{mfile}: not a readable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{mfile}: not a lutlm packed-model manifest (no format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{mfile}: manifest version {manifest.get('version')!r} is not supported (this "
            f"lutlm reads version {VERSION}); quantize the model again with this lutlm"
        )
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
    arrays = _MappedSafetensors(path / WEIGHTS)
    try:
        return _build(manifest, config, arrays, act_bits, mfile)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{mfile}: malformed manifest ({type(e).__name__}: {e})") from e


def _build(
    manifest: dict[str, Any],
    config: ModelConfig,
    arrays: _MappedSafetensors,
    act_bits: int,
    mfile: Path,
) -> Decoder:
    c = config
    D, F = c.hidden_size, c.intermediate_size
    qs, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    # What the decoder computes with each layer array: linears (N, K), vectors length.
    linear_shapes = {"qkv": (qs + 2 * kv, D), "o": (D, qs), "gate_up": (2 * F, D), "down": (D, F)}
    vector_sizes = {"attn_norm": D, "ffn_norm": D, "attn_sub_norm": qs, "ffn_sub_norm": F}

    def linear(name: str, entry: dict[str, Any], N: int, K: int) -> Linear:
        kind, shape = entry["kind"], tuple(entry["shape"])
        if kind not in LINEAR_KINDS:
            raise ValueError(f"{mfile}: {name} has kind {kind!r}, expected one of {LINEAR_KINDS}")
        if shape != (N, K):
            raise ValueError(f"{mfile}: {name} has shape {shape}, expected {(N, K)}")
        group_size = entry.get("group_size", 32)
        if group_size not in GROUP_SIZES:
            raise ValueError(f"{mfile}: {name} has group_size {group_size}, not in {GROUP_SIZES}")
        keys = entry["arrays"]
        a = {
            n: arrays.get(keys[n], dtype, want)
            for n, (dtype, want) in _linear_arrays(kind, *shape, group_size).items()
            if n != "m" or "m" in keys  # an INT4 minimum is optional (symmetric weights)
        }
        w: PackedWeight
        if kind == "int4":
            layout = entry["layout"]
            if layout not in LAYOUTS:
                raise ValueError(f"{mfile}: {name} has layout {layout!r}, expected {LAYOUTS}")
            w = Int4Weight(a["codes"], a["d"], a.get("m"), shape, group_size, layout)
        elif kind == "int8":
            w = Int8Weight(a["codes"], a["d"], shape, group_size)
        elif kind == "ternary":
            w = TernaryWeight(a["codes"], a["scales"], shape)
        else:
            w = a["w"]
        bias = entry.get("bias")
        if bias is not None:
            bias = arrays.get(bias, np.float32, (shape[0],))
        elif c.qkv_bias and name.endswith(".qkv"):
            raise ValueError(f"{mfile}: {name} has no bias, but config.qkv_bias is true")
        return Linear(w, bias, act_bits)

    if len(manifest["layers"]) != c.num_layers:
        raise ValueError(
            f"{mfile}: {len(manifest['layers'])} layers listed, the config has {c.num_layers}"
        )
    layers = []
    for i, entry in enumerate(manifest["layers"]):
        parts: dict[str, Any] = {}
        for role, value in entry.items():
            if role in linear_shapes:
                parts[role] = linear(f"layers.{i}.{role}", value, *linear_shapes[role])
            elif role in vector_sizes:
                parts[role] = arrays.get(value, np.float32, (vector_sizes[role],))
            else:
                raise ValueError(f"{mfile}: layer {i} has an unknown part {role!r}")
        layers.append(LayerWeights(**parts))
    embed = manifest["embed"]
    # One embedding row and one logit per token: fewer would fail at generation.
    if list(embed["shape"]) != [c.vocab_size, D]:
        raise ValueError(
            f"{mfile}: embed has shape {embed['shape']}, expected {[c.vocab_size, D]} (a row "
            f"for each of the {c.vocab_size} tokens of config.vocab_size)"
        )
    return Decoder(
        config,
        Embedding(arrays.get(embed["key"], np.float32, (c.vocab_size, D))),
        layers,
        arrays.get(manifest["final_norm"], np.float32, (D,)),
        linear("lm_head", manifest["lm_head"], c.vocab_size, D),
    )


def _kind(w: PackedWeight) -> str:
    if isinstance(w, Int4Weight):
        return "int4"
    if isinstance(w, Int8Weight):
        return "int8"
    if isinstance(w, TernaryWeight):
        return "ternary"
    if isinstance(w, np.ndarray) and w.dtype == np.float32:
        return "f32"
    raise ValueError(f"cannot write a weight of type {type(w).__name__} to a packed model")


def _linear_arrays(
    kind: str, N: int, K: int, group_size: int
) -> dict[str, tuple[type[np.generic], tuple[int, ...]]]:
    """Dtype and shape of each array of a packed linear, as the kernels check them
    (csrc/bindings.cpp): tiles of 16 rows, K padded to 32 and to whole groups."""
    R = _C.TILE_ROWS
    NT = -(-N // R)
    if kind == "f32":
        return {"w": (np.float32, (N, K))}
    if kind == "ternary":
        Kp = -(-K // _C.K_ALIGN) * _C.K_ALIGN
        return {"codes": (np.uint8, (NT, Kp // 8, 32)), "scales": (np.float32, (N,))}
    align = max(_C.K_ALIGN, group_size)
    Kp = -(-K // align) * align
    scales = (np.uint16, (NT, Kp // group_size, R))
    if kind == "int4":
        return {"codes": (np.uint8, (NT, Kp // 4, 32)), "d": scales, "m": scales}
    return {"codes": (np.int8, (NT, Kp // 4, R, 4)), "d": scales}


class _MappedSafetensors:
    """A safetensors file mapped read-only; arrays are views of the map, checked first.

    The format: an 8-byte little-endian header length, a JSON header {key: {dtype, shape,
    data_offsets: [begin, end]}} (offsets relative to the end of the header), the data.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            with open(file, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                n = int.from_bytes(f.read(8), "little")
                if self.size < 8 or n > self.size - 8:
                    raise ValueError(
                        f"{file}: truncated: {self.size} bytes, the header alone needs {8 + n}"
                    )
                header = json.loads(f.read(n))
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ValueError(f"{file}: cannot read the packed weights ({e})") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{file}: not a safetensors file (bad header: {e})") from e
        if not isinstance(header, dict):
            raise ValueError(f"{file}: not a safetensors file (the header is not an object)")
        self.header = header
        self.start = 8 + n

    def get(self, key: str, dtype: type[np.generic], shape: tuple[int, ...]) -> np.ndarray:
        """The array under key, which must have this dtype and shape."""
        dt = np.dtype(dtype)
        entry = self.header.get(key)
        if not isinstance(entry, dict):
            raise ValueError(f"{self.file}: array {key!r} is missing")
        want = f"{_DTYPE_NAMES[dt]} {list(shape)}"
        got = f"{entry.get('dtype')} {entry.get('shape')}"
        if got != want:
            raise ValueError(f"{self.file}: array {key!r} is {got}, expected {want}")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and [type(o) for o in offsets] == [int, int]):
            offsets = [0, -1]  # reported below as the wrong size
        begin, end = offsets
        if end - begin != prod(shape) * dt.itemsize or begin < 0:
            raise ValueError(
                f"{self.file}: array {key!r} has data_offsets {[begin, end]}, expected "
                f"{prod(shape) * dt.itemsize} bytes"
            )
        if self.start + end > self.size:
            raise ValueError(
                f"{self.file}: truncated: array {key!r} ends at byte {self.start + end}, "
                f"the file has {self.size}"
            )
        if (self.start + begin) % dt.itemsize:  # save_file aligns every tensor; others may not
            raise ValueError(f"{self.file}: array {key!r} is not aligned to its dtype")
        a = np.frombuffer(self.map, dt, prod(shape), self.start + begin)
        return a.reshape(shape)
