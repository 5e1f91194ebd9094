"""Text to token ids and back: one `Tokenizer` for GGUF files and HF model directories.

A `Tokenizer` (tokenizer.py) wraps a `tokenizers.Tokenizer` (the Rust library does the
encoding and decoding) and keeps what the engine needs around it: the BOS id, the set of
end-of-sequence ids, the chat templates, and streaming detokenization (incremental.py).

- gguf_vocab.py: a GGUF file's `tokenizer.*` metadata; `gpt2` vocabularies are byte-level
  BPE (byte_level_bpe.py, split by the regexes `tokenizer.ggml.pre` names), `llama` ones
  sentencepiece (sentencepiece_vocab.py, encoded as llama.cpp does: adjacent pieces merge
  best score first).
- hf_directory.py: `tokenizer.json`, else `tokenizer.model` (sentencepiece, read straight
  from its protobuf bytes), with tokenizer_config.json, chat_template.jinja/.json,
  generation_config.json and config.json; and writing such a directory.
- special_tokens.py: token types, end-of-turn tokens, the BOS/EOS post-processor.
- chat_template.py: HF chat templates in jinja2's sandbox, under the time and size budgets
  of template_budget.py: a template that loops without end, recurses, or builds huge
  strings or ranges fails with a ValueError instead of hanging its thread.
"""

from lutlm.tokenizer.byte_level_bpe import BYTE_LEVEL_SPLITS
from lutlm.tokenizer.incremental import IncrementalDecoder
from lutlm.tokenizer.sentencepiece_vocab import SPACE
from lutlm.tokenizer.special_tokens import END_OF_TURN_TEXTS, TokenType
from lutlm.tokenizer.tokenizer import Tokenizer

__all__ = [
    "BYTE_LEVEL_SPLITS",
    "END_OF_TURN_TEXTS",
    "SPACE",
    "IncrementalDecoder",
    "TokenType",
    "Tokenizer",
]
