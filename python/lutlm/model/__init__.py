"""One decoder forward for every supported family, over a flat batch of tokens."""

from lutlm.backends.batch import ForwardBatch
from lutlm.model.decoder import Decoder
from lutlm.model.kv_cache import KVCache
from lutlm.model.loader import load_model
from lutlm.model_config import FAMILIES, ModelConfig

__all__ = ["FAMILIES", "Decoder", "ForwardBatch", "KVCache", "ModelConfig", "load_model"]
