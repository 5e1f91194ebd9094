"""HF model directories: config.json and single or sharded *.safetensors (memory-mapped).

Pickled weights (*.bin, *.pt) are refused: loading them runs arbitrary code. bfloat16
tensors, which numpy cannot hold, are read from the file's bytes and widened to float32
exactly. BitNet b1.58 checkpoints (quantization_config quant_method "bitnet") store each
linear's ternary weight packed in uint8 with a `weight_scale`; they are read as ternary
codes and a per-row scale (:meth:`HFModelDir.ternary`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from lutlm.formats.json_object import read_json_object
from lutlm.model_config import FAMILIES, ModelConfig, positive_int

# HF model_type -> lutlm family
MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "bitnet": "bitnet"}
CONVERT_HINT = (
    "pickled weights are not loaded (unpickling runs code); convert them to safetensors, "
    "e.g. AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, "
    "safe_serialization=True)"
)
# tensor()'s kind for a BitNet linear weight packed 4 rows per byte (its shape is the
# unpacked [N, K]); read it with ternary().
BITNET_PACKED = "BITNET_PACKED"


def unpack_bitnet(packed: np.ndarray) -> np.ndarray:
    """Codes c uint8 [N, K] (w = c - 1) of a BitNet checkpoint's packed uint8 weight
    [N/4, K]: as transformers' unpack_weights (integrations/bitnet.py), bits 2i..2i+1 of
    packed[r] are row i * N/4 + r, so the four bit pairs stack as four blocks of rows."""
    shifts = np.array([0, 2, 4, 6], np.uint8)[:, None, None]
    c = (packed[None] >> shifts) & 3
    return c.reshape(4 * packed.shape[0], packed.shape[1])


class HFModelDir:
    """config.json plus the safetensors shards of an HF checkpoint directory.

    Raises:
        ValueError: missing config.json, no safetensors (or only pickled weights), a
            broken index or an unreadable shard, naming the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise ValueError(f"{self.path}: no config.json (not an HF model directory)")
        self.raw_config: dict[str, Any] = read_json_object(cfg)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            if list(self.path.glob("*.bin")) or list(self.path.glob("*.pt")):
                raise ValueError(f"{self.path}: {CONVERT_HINT}")
            raise ValueError(f"{self.path}: no *.safetensors weights")
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            files = self._shards(index)
        self.where: dict[str, Path] = {}
        self._handles = {}
        for f in files:
            try:
                h = safe_open(f, framework="numpy")
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"{f}: not a readable safetensors file ({e})") from e
            self._handles[f] = h
            for key in h.keys():
                self.where[key] = f
        self._bf16_layout: dict[Path, tuple[int, dict[str, Any]]] = {}
        # ModelConfig field -> its config.json key, once config() has run (see GGUFModelFile).
        self.config_keys: dict[str, str] = {}
        self.bitnet_class = self._bitnet_class()

    def _shards(self, index: Path) -> list[Path]:
        """The shard files that model.safetensors.index.json's weight_map names."""
        raw = read_json_object(index)
        weight_map = raw.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            found = (
                "missing"
                if weight_map is None
                else "empty"
                if weight_map == {}
                else f"a {type(weight_map).__name__}"
            )
            raise ValueError(
                f"{index}: weight_map is {found}; it must be an object of tensor name -> shard file"
            )
        files = []
        for name in sorted({str(f) for f in weight_map.values()}):
            f = self.path / name
            # A shard outside the directory is no part of this checkpoint.
            if Path(name).is_absolute() or ".." in Path(name).parts or not f.is_file():
                raise ValueError(
                    f"{index}: weight_map names shard {name!r}, which is not a file in {self.path}"
                )
            files.append(f)
        return files

    def _bitnet_class(self) -> str | None:
        """transformers' linear class of an offline-quantized BitNet checkpoint, else None.

        "bitlinear" (the default) computes y = (x8 @ codes.T) / (x_scale * weight_scale),
        so w = codes / weight_scale; "autobitlinear" multiplies: w = weights * weight_scale
        (transformers/integrations/bitnet.py). Online quantization keeps float weights.
        """
        q = self.raw_config.get("quantization_config") or {}
        if not isinstance(q, dict):
            raise ValueError(
                f"{self.path / 'config.json'}: quantization_config is {q!r}; expected an object"
            )
        if q.get("quant_method") != "bitnet" or q.get("quantization_mode", "offline") != "offline":
            return None
        if q.get("use_rms_norm"):
            raise ValueError(
                f"{self.path / 'config.json'}: BitNet use_rms_norm (an RMSNorm inside every "
                "linear) is not supported"
            )
        linear_class = q.get("linear_class", "bitlinear")
        if linear_class not in ("bitlinear", "autobitlinear"):
            raise ValueError(
                f"{self.path / 'config.json'}: unknown BitNet linear_class {linear_class!r}"
            )
        return linear_class

    def config(self) -> ModelConfig:
        """The decoder config from config.json.

        Raises:
            ValueError: a missing key or a value the decoder cannot run with, naming
                config.json and the key.
        """
        c = self.raw_config
        file = self.path / "config.json"
        model_type = c.get("model_type", "")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"{file}: unsupported model_type {model_type!r}; "
                f"supported: {', '.join(MODEL_TYPES)}"
            )

        def need(key: str) -> Any:
            if c.get(key) is None:
                raise ValueError(f"{file}: {key} is missing")
            return c[key]

        def opt(key: str, default: Any) -> Any:  # transformers reads null as its default
            value = c.get(key)
            return default if value is None else value

        keys = {
            "architecture": "model_type",
            "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads",
            "num_kv_heads": "num_key_value_heads",
            "eos_token_ids": "eos_token_id",
        }
        # head_dim is derived from these when absent: valid before they are divided.
        n_heads = positive_int(need("num_attention_heads"), f"{file}: num_attention_heads")
        hidden = positive_int(need("hidden_size"), f"{file}: hidden_size")
        head_dim = c.get("head_dim")
        if head_dim is None:
            if hidden % n_heads:
                raise ValueError(
                    f"{file}: hidden_size ({hidden}) is not a multiple of num_attention_heads "
                    f"({n_heads}), and head_dim is not given"
                )
            head_dim = hidden // n_heads
            keys["head_dim"] = "hidden_size / num_attention_heads"
        # transformers >= 5 writes rope_parameters (theta inside); older files rope_scaling.
        rope_key = "rope_parameters" if c.get("rope_parameters") else "rope_scaling"
        rope = c.get(rope_key) or {}
        if not isinstance(rope, dict):
            raise ValueError(f"{file}: {rope_key} is {rope!r}; expected an object")
        rope = dict(rope)
        keys["rope_scaling"] = rope_key
        if "rope_theta" in rope:
            keys["rope_theta"] = f"{rope_key}.rope_theta"
        theta = rope.pop("rope_theta", opt("rope_theta", 10000.0))
        scaling = rope if rope.get("rope_type", rope.get("type", "default")) != "default" else None
        eos = c.get("eos_token_id")
        family = MODEL_TYPES[model_type]
        act = opt("hidden_act", FAMILIES[family].get("hidden_act", "silu"))
        self.config_keys = keys
        return ModelConfig.from_file(
            str(file),
            keys,
            family,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=n_heads,
            num_kv_heads=opt("num_key_value_heads", n_heads),
            head_dim=head_dim,
            rms_norm_eps=opt("rms_norm_eps", 1e-6),
            rope_theta=theta,
            max_position_embeddings=opt("max_position_embeddings", 4096),
            rope_scaling=scaling,
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            rope_interleaved=False,
            hidden_act="silu" if act == "swish" else act,  # ACT2FN's other name for SiLU
            bos_token_id=c.get("bos_token_id"),
            eos_token_ids=[] if eos is None else eos if isinstance(eos, list) else [eos],
        )

    def has(self, name: str) -> bool:
        return name in self.where

    def file_of(self, name: str) -> Path:
        """The safetensors file that holds a tensor."""
        f = self.where.get(name)
        if f is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        return f

    def _is_packed(self, dtype: str) -> bool:
        # BitLinear's weight buffer is uint8; AutoBitLinear unpacks uint8 weights too.
        return self.bitnet_class is not None and dtype == "U8"

    def float32(self, name: str) -> np.ndarray:
        """A tensor as float32; BitNet weights as the values the model computes with."""
        f = self.file_of(name)
        dtype = self._handles[f].get_slice(name).get_dtype()
        if self._is_packed(dtype):
            t, scales = self.ternary(name)
            return t.astype(np.float32) * scales[:, None]
        if dtype == "BF16":
            out = self._bf16(f, name)
        else:
            out = np.ascontiguousarray(self._handles[f].get_tensor(name), dtype=np.float32)
        scale_name = name.removesuffix(".weight") + ".weight_scale"
        if (
            self.bitnet_class == "autobitlinear"
            and name.endswith(".weight")
            and self.has(scale_name)
        ):
            out = out * self._weight_scale(name)  # AutoBitLinear's weights saved unpacked
        return out

    def _bf16(self, f: Path, name: str) -> np.ndarray:
        """A bfloat16 tensor widened to float32 exactly (bf16 is float32's top 16 bits),
        read from the bytes the safetensors header points at: numpy has no bfloat16."""
        if f not in self._bf16_layout:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                self._bf16_layout[f] = (8 + n, json.loads(fh.read(n)))
        start, header = self._bf16_layout[f]
        shape = tuple(header[name]["shape"])
        begin, end = header[name]["data_offsets"]
        count = int(np.prod(shape))
        if end - begin != 2 * count:
            raise ValueError(f"{f}: tensor {name!r} has {end - begin} bytes for shape {shape}")
        out = np.fromfile(f, dtype="<u2", count=count, offset=start + begin).astype(np.uint32)
        out <<= 16
        return out.view(np.float32).reshape(shape)

    def tensor(self, name: str) -> tuple[str, tuple[int, ...], None]:
        """(dtype name, shape, None): the data is read by float32() (or ternary() for
        the kind BITNET_PACKED, whose shape is the unpacked [N, K])."""
        s = self._handles[self.file_of(name)].get_slice(name)
        dtype, shape = s.get_dtype(), tuple(s.get_shape())
        if self._is_packed(dtype) and len(shape) == 2:
            return BITNET_PACKED, (4 * shape[0], shape[1]), None
        return dtype, shape, None

    def ternary(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A BitNet packed weight exactly: codes t int8 [N, K] in {-1, 0, 1} and per-row
        scales float32 [N] (the linear's one scale on every row; 1 / weight_scale for
        "bitlinear" is float32's rounding of the exact value).

        Raises:
            ValueError: not a 2-D uint8 tensor, code 3 (w = 2) in it, or a missing,
                non-scalar or zero weight_scale, naming the file and the tensor.
        """
        f = self.file_of(name)
        packed = self._handles[f].get_tensor(name)
        if packed.dtype != np.uint8 or packed.ndim != 2:
            raise ValueError(
                f"{f}: BitNet tensor {name!r} is {packed.dtype} {packed.shape}; expected "
                "uint8 [N/4, K] (4 ternary rows per byte)"
            )
        codes = unpack_bitnet(packed)
        if codes.max(initial=0) > 2:
            raise ValueError(f"{f}: BitNet tensor {name!r} holds code 3 (w = 2): not ternary")
        scale = self._weight_scale(name)
        return codes.view(np.int8) - 1, np.full(codes.shape[0], scale, np.float32)

    def _weight_scale(self, name: str) -> np.float32:
        """The multiplier of a BitNet linear's weights, from its weight_scale tensor."""
        scale_name = name.removesuffix(".weight") + ".weight_scale"
        if not self.has(scale_name):
            raise ValueError(
                f"{self.file_of(name)}: BitNet weight {name!r} has no {scale_name!r} "
                "(expected one value)"
            )
        ws = self.float32(scale_name)
        if ws.size != 1:
            raise ValueError(
                f"{self.file_of(scale_name)}: tensor {scale_name!r} has shape {ws.shape}, "
                "expected one value"
            )
        scale = np.float32(ws.reshape(()))
        if self.bitnet_class == "bitlinear":
            with np.errstate(divide="ignore"):  # 0 gives inf, refused below
                scale = np.float32(1) / scale
        if not np.isfinite(scale):
            raise ValueError(
                f"{self.file_of(scale_name)}: tensor {scale_name!r} is {ws.item()}, which "
                f"gives the weights of {name!r} a scale of {scale}"
            )
        return scale
