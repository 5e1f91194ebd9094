"""The model's configuration (defined in lutlm/model_config.py, below formats/)."""

from lutlm.model_config import (
    FAMILIES,
    HIDDEN_ACTS,
    MAX_HEAD_DIM,
    ROPE_SCALINGS,
    ConfigError,
    ModelConfig,
    as_int,
    positive_int,
)

__all__ = [
    "FAMILIES",
    "HIDDEN_ACTS",
    "MAX_HEAD_DIM",
    "ROPE_SCALINGS",
    "ConfigError",
    "ModelConfig",
    "as_int",
    "positive_int",
]
