"""HF model directories: config.json and single or sharded *.safetensors (memory-mapped).

Pickled weights (*.bin, *.pt) are refused: loading them runs arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from lutlm.model.config import FAMILIES, ModelConfig

# HF model_type -> lutlm family
MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "bitnet": "bitnet"}
CONVERT_HINT = (
    "pickled weights are not loaded (unpickling runs code); convert them to safetensors, "
    "e.g. AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, "
    "safe_serialization=True)"
)


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
        try:
            self.raw_config: dict[str, Any] = json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg}: invalid JSON ({e})") from e
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            if list(self.path.glob("*.bin")) or list(self.path.glob("*.pt")):
                raise ValueError(f"{self.path}: {CONVERT_HINT}")
            raise ValueError(f"{self.path}: no *.safetensors weights")
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = sorted({self.path / f for f in weight_map.values()})
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

    def config(self) -> ModelConfig:
        c = self.raw_config
        model_type = c.get("model_type", "")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"{self.path / 'config.json'}: unsupported model_type {model_type!r}; "
                f"supported: {', '.join(MODEL_TYPES)}"
            )
        n_heads = int(c["num_attention_heads"])
        # transformers >= 5 writes rope_parameters (theta inside); older files rope_scaling.
        rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
        theta = float(rope.pop("rope_theta", c.get("rope_theta", 10000.0)))
        scaling = rope if rope.get("rope_type", rope.get("type", "default")) != "default" else None
        hidden = int(c["hidden_size"])
        eos = c.get("eos_token_id")
        eos_ids = [] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])]
        family = MODEL_TYPES[model_type]
        return ModelConfig.for_family(
            family,
            vocab_size=int(c["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(c["intermediate_size"]),
            num_layers=int(c["num_hidden_layers"]),
            num_heads=n_heads,
            num_kv_heads=int(c.get("num_key_value_heads") or n_heads),
            head_dim=int(c.get("head_dim") or hidden // n_heads),
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            max_position_embeddings=int(c.get("max_position_embeddings", 4096)),
            rope_scaling=scaling,
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            rope_interleaved=False,
            hidden_act="relu2"
            if c.get("hidden_act") == "relu2"
            else FAMILIES[family].get("hidden_act", "silu"),
            bos_token_id=c.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    def has(self, name: str) -> bool:
        return name in self.where

    def float32(self, name: str) -> np.ndarray:
        f = self.where.get(name)
        if f is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        h = self._handles[f]
        dtype = h.get_slice(name).get_dtype()
        if dtype == "BF16":  # numpy has no bfloat16: widen the bits
            raise ValueError(
                f"{f}: tensor {name!r} is bfloat16, which lutlm cannot read yet; "
                "save the checkpoint in float16 or float32"
            )
        return np.ascontiguousarray(h.get_tensor(name), dtype=np.float32)

    def tensor(self, name: str) -> tuple[str, tuple[int, ...], None]:
        """(dtype name, shape, None): the data is read by float32()."""
        f = self.where.get(name)
        if f is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        s = self._handles[f].get_slice(name)
        return s.get_dtype(), tuple(s.get_shape()), None
