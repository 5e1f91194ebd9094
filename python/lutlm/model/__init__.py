"""One decoder forward for every supported family, over a flat batch of tokens."""

from typing import Any

from lutlm.model.batch import ForwardBatch
from lutlm.model.decoder import Decoder
from lutlm.model.kv_cache import KVCache
from lutlm.model_config import FAMILIES, ModelConfig

__all__ = ["FAMILIES", "Decoder", "ForwardBatch", "KVCache", "ModelConfig", "load_model"]


def __getattr__(name: str) -> Any:
    # The loader imports formats/, which imports model.config: loading it lazily lets
    # either package be imported first.
    if name == "load_model":
        from lutlm.model.loader import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
