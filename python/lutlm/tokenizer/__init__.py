"""Text to token ids and back (see :mod:`lutlm.tokenizer.tokenizer`)."""

from lutlm.tokenizer.tokenizer import (
    BYTE_LEVEL_SPLITS,
    END_OF_TURN_TEXTS,
    SPACE,
    IncrementalDecoder,
    Tokenizer,
    TokenType,
    _read_sentencepiece_model,
)

__all__ = [
    "BYTE_LEVEL_SPLITS",
    "END_OF_TURN_TEXTS",
    "SPACE",
    "IncrementalDecoder",
    "TokenType",
    "Tokenizer",
    "_read_sentencepiece_model",
]
