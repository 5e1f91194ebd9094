"""Model configuration: one decoder, switched per family by a registry row.

It sits below formats/ (which build a ModelConfig from a file's metadata) and model/
(which runs it), so that neither imports the other; lutlm.model.config re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

# Per-family switches of the shared decoder. A new family is one new row.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "qwen2": {"qkv_bias": True},
    "bitnet": {"hidden_act": "relu2", "sub_norms": True},
}
HIDDEN_ACTS = ("silu", "relu2")
ROPE_SCALINGS = ("linear", "llama3", "default")
# The attention and RoPE kernels' limit (csrc/bind_common.cpp).
MAX_HEAD_DIM = 1024
_POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "max_position_embeddings",
)


class ConfigError(ValueError):
    """A ModelConfig value that the decoder cannot run with.

    The message refers to fields as ``{field}`` placeholders, so that a loader can name
    the key of its own file that held the value (:meth:`naming`); str() names the
    ModelConfig fields themselves.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.naming({}))

    def naming(self, keys: Mapping[str, str]) -> str:
        """The message with each field written as keys gives it (else its own name)."""
        return self.template.format_map(_Names(keys))


class _Names(dict):
    def __init__(self, keys: Mapping[str, str]) -> None:
        super().__init__(keys)

    def __missing__(self, name: str) -> str:
        return name


def _show(value: Any) -> str:
    """repr(value), braces doubled: it goes into a ConfigError template."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def as_int(value: Any) -> int | None:
    """value as an int when it is one (an integral float too, as JSON writers may give),
    else None. Booleans are not integers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def positive_int(value: Any, where: str) -> int:
    """value as a positive int.

    Args:
        value: the value read from a file.
        where: "file: key", the start of the error message.

    Raises:
        ValueError: "{where} is {value!r}; it must be a positive integer".
    """
    v = as_int(value)
    if v is None or v <= 0:
        raise ValueError(f"{where} is {value!r}; it must be a positive integer")
    return v


def _positive_int_field(value: Any, name: str) -> int:
    v = as_int(value)
    if v is None or v <= 0:
        raise ConfigError(f"{{{name}}} is {_show(value)}; it must be a positive integer")
    return v


def _is_positive_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, Real)
        and math.isfinite(value)
        and value > 0
    )


def _positive_float_field(value: Any, name: str) -> float:
    if not _is_positive_number(value):
        raise ConfigError(f"{{{name}}} is {_show(value)}; it must be a finite number above 0")
    return float(value)


@dataclass(slots=True)
class ModelConfig:
    """Shape and switches of a decoder-only transformer.

    Raises:
        ConfigError: a value the decoder cannot run with (a ValueError naming the field).
    """

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
            raise ConfigError(
                f"{{architecture}} is {_show(self.architecture)}; supported: {', '.join(FAMILIES)}"
            )
        for name in _POSITIVE_INTS:
            setattr(self, name, _positive_int_field(getattr(self, name), name))
        for name in ("rms_norm_eps", "rope_theta"):
            setattr(self, name, _positive_float_field(getattr(self, name), name))
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{{num_heads}} ({self.num_heads}) is not a multiple of {{num_kv_heads}} "
                f"({self.num_kv_heads}): each kv head must serve the same number of query heads"
            )
        if self.head_dim % 2 or self.head_dim > MAX_HEAD_DIM:
            raise ConfigError(
                f"{{head_dim}} is {self.head_dim}; it must be even (RoPE rotates pairs) and at "
                f"most {MAX_HEAD_DIM}"
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(
                f"{{hidden_act}} is {_show(self.hidden_act)}; supported: "
                f"{', '.join(map(repr, HIDDEN_ACTS))}"
            )
        self._check_rope_scaling()
        if self.bos_token_id is not None:
            bos = as_int(self.bos_token_id)
            if bos is None or bos < 0:
                raise ConfigError(
                    f"{{bos_token_id}} is {_show(self.bos_token_id)}; it must be a token id"
                )
            self.bos_token_id = bos
        eos = [as_int(i) for i in self.eos_token_ids]
        if any(i is None or i < 0 for i in eos):
            raise ConfigError(
                f"{{eos_token_ids}} is {_show(self.eos_token_ids)}; it must hold token ids"
            )
        self.eos_token_ids = eos  # type: ignore[assignment]  # no None left

    def _check_rope_scaling(self) -> None:
        s = self.rope_scaling
        if s is None:
            return
        if not isinstance(s, dict):
            raise ConfigError(f"{{rope_scaling}} is {_show(s)}; it must be an object")
        kind = s.get("rope_type", s.get("type"))
        if kind not in ROPE_SCALINGS:
            raise ConfigError(
                f"{{rope_scaling}} type {_show(kind)} is not supported (linear, llama3)"
            )
        if kind == "default":
            return
        # rope.inverse_frequencies divides by each of these (and by high - low).
        values = {"factor": s.get("factor")}
        if kind == "llama3":
            values["low_freq_factor"] = s.get("low_freq_factor", 1.0)
            values["high_freq_factor"] = s.get("high_freq_factor", 4.0)
            values["original_max_position_embeddings"] = s.get(
                "original_max_position_embeddings", 8192
            )
        for key, value in values.items():
            if not _is_positive_number(value):
                raise ConfigError(
                    f"{{rope_scaling}}.{key} is {_show(value)}; it must be a finite number above 0"
                )
        if kind == "llama3" and values["high_freq_factor"] <= values["low_freq_factor"]:
            raise ConfigError(
                "{rope_scaling}.high_freq_factor must be above its low_freq_factor (llama3 "
                "interpolates between them)"
            )

    @classmethod
    def for_family(cls, architecture: str, **kwargs: Any) -> ModelConfig:
        """Config with the family's switches applied under explicit kwargs."""
        if architecture not in FAMILIES:
            raise ConfigError(
                f"{{architecture}} is {_show(architecture)}; supported: {', '.join(FAMILIES)}"
            )
        return cls(architecture=architecture, **{**FAMILIES[architecture], **kwargs})

    @classmethod
    def from_file(
        cls, file: str, keys: Mapping[str, str], architecture: str, **kwargs: Any
    ) -> ModelConfig:
        """for_family, with a bad value's error naming the file and its key there.

        Args:
            file: the file the values come from, for error messages.
            keys: ModelConfig field -> the file's key for it.
            architecture, kwargs: as for for_family.

        Raises:
            ValueError: "{file}: {key} is ...; it must be ...".
        """
        try:
            return cls.for_family(architecture, **kwargs)
        except ConfigError as e:
            raise ValueError(f"{file}: {e.naming(keys)}") from None
