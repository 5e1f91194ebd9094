"""Special tokens: which tokens are matched whole in text, which end a turn, and the
post-processor that adds BOS/EOS; and `TokenizerParts`, what a vocabulary reader hands
to `Tokenizer`."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, processors


class TokenType(enum.IntEnum):
    """Token types, numbered as in GGUF's `tokenizer.ggml.token_type` and sentencepiece."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Tokens that end a turn, by their text. A GGUF stores one eos id; llama.cpp also stops on these,
# and so do the models' own generation configs (Qwen2.5: <|im_end|> and <|endoftext|>).
END_OF_TURN_TEXTS = frozenset(
    {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"}
)


@dataclass(slots=True)
class TokenizerParts:
    """A tokenizer as a reader of GGUF metadata or an HF directory found it: the arguments
    of `Tokenizer` (see there)."""

    backend: tokenizers.Tokenizer
    bos_token_id: int | None
    eos_token_ids: Iterable[int]
    chat_templates: dict[str, str] = field(default_factory=dict)
    template_tokens: dict[str, str] = field(default_factory=dict)
    name: str = "tokenizer"


def add_typed_tokens(backend: tokenizers.Tokenizer, texts: list[str], types: list[int]) -> None:
    """Make CONTROL/UNKNOWN tokens special and USER_DEFINED ones added tokens: both are
    matched whole in text, before the model; only special ones are dropped by decode."""
    pairs = list(zip(texts, types, strict=True))
    special = [t for t, k in pairs if k in (TokenType.CONTROL, TokenType.UNKNOWN)]
    user = [t for t, k in pairs if k == TokenType.USER_DEFINED]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])


def add_config_tokens(backend: tokenizers.Tokenizer, config: dict, file: Path) -> None:
    """tokenizer_config.json's added_tokens_decoder ({id: {content, special}}), for a
    tokenizer.model directory; ids must continue the vocabulary."""
    try:
        entries = sorted(
            (int(i), e["content"], bool(e.get("special")))
            for i, e in config.get("added_tokens_decoder", {}).items()
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{file}: added_tokens_decoder is not {{id: {{content, ...}}}}") from e
    for token_id, content, special in entries:
        token = AddedToken(content, special=special, normalized=False)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
        if backend.token_to_id(content) != token_id:
            raise ValueError(
                f"{file}: added token {content!r} has id {token_id}, but the vocabulary "
                f"gives it {backend.token_to_id(content)}"
            )


def set_bos_eos(backend: tokenizers.Tokenizer, bos_id: int | None, eos_id: int | None) -> None:
    """Post-processor adding BOS before and/or EOS after each sequence (None: not added)."""
    bos, eos = ([] if i is None else [(backend.id_to_token(i), i)] for i in (bos_id, eos_id))
    if not bos and not eos:
        backend.post_processor = None
        return
    first, last = [t for t, _ in bos], [t for t, _ in eos]
    backend.post_processor = processors.TemplateProcessing(
        single=[*first, "$A", *last],
        pair=[*first, "$A", *last, *first, "$B:1", *last],
        special_tokens=bos + eos,
    )
