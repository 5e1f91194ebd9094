"""Model configuration: one decoder, switched per family by a registry row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Per-family switches of the shared decoder. A new family is one new row.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "qwen2": {"qkv_bias": True},
    "bitnet": {"hidden_act": "relu2", "sub_norms": True},
}


@dataclass(slots=True)
class ModelConfig:
    """Shape and switches of a decoder-only transformer."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    # Weights of GGUF llama-family files are permuted so that RoPE rotates adjacent
    # pairs (x[2i], x[2i+1]); HF checkpoints rotate halves (x[i], x[i + d/2]).
    rope_interleaved: bool = False
    qkv_bias: bool = False
    hidden_act: str = "silu"
    sub_norms: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.architecture not in FAMILIES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; supported: {', '.join(FAMILIES)}"
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.hidden_act not in ("silu", "relu2"):
            raise ValueError(f"hidden_act must be 'silu' or 'relu2', got {self.hidden_act!r}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("linear", "llama3", "default"):
                raise ValueError(f"unsupported rope_scaling type {kind!r} (linear, llama3)")

    @classmethod
    def for_family(cls, architecture: str, **kwargs: Any) -> ModelConfig:
        """Config with the family's switches applied under explicit kwargs."""
        if architecture not in FAMILIES:
            raise ValueError(
                f"unknown architecture {architecture!r}; supported: {', '.join(FAMILIES)}"
            )
        return cls(architecture=architecture, **{**FAMILIES[architecture], **kwargs})
