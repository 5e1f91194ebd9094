"""A tokenizer from a GGUF file's `tokenizer.*` metadata.

`tokenizer.ggml.model` names the kind: `gpt2` is byte-level BPE (byte_level_bpe.py), `llama`
a sentencepiece vocabulary (sentencepiece_vocab.py). Tokens typed CONTROL or USER_DEFINED are
matched whole inside text (CONTROL ones are special: `decode` drops them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from lutlm.tokenizer.byte_level_bpe import IGNORE_MERGES, byte_level_bpe
from lutlm.tokenizer.sentencepiece_vocab import SpmVocab, sentencepiece_backend
from lutlm.tokenizer.special_tokens import (
    END_OF_TURN_TEXTS,
    TokenizerParts,
    TokenType,
    add_typed_tokens,
    set_bos_eos,
)


def read_gguf_tokenizer(path: Path) -> TokenizerParts:
    """The tokenizer stored in a GGUF file's metadata (see `Tokenizer.from_gguf`).

    Raises:
        ValueError: the file is missing or unreadable, has no tokenizer, or one of a kind
            other than `gpt2`/`llama`, naming the file.
    """
    meta = read_gguf_metadata(path)
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise ValueError(f"{path}: no tokenizer.ggml.model/tokens metadata (no tokenizer)")
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    n = len(tokens)
    types = meta.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * n
    if len(types) != n:
        raise ValueError(f"{path}: {len(types)} token types for {n} tokens")
    if len(set(tokens)) != n:
        raise ValueError(f"{path}: tokenizer.ggml.tokens holds duplicate tokens")
    backend, defaults = _backend(kind, meta, tokens, types, path)
    add_typed_tokens(backend, tokens, types)

    def token_id(key: str, default: int | None = None) -> int | None:
        value = meta.get(f"tokenizer.ggml.{key}", default)
        return int(value) if value is not None and 0 <= int(value) < n else None

    bos = token_id("bos_token_id", defaults["bos"])
    eos = token_id("eos_token_id", defaults["eos"])
    eos_ids = {eos, token_id("eot_token_id"), token_id("eom_token_id")} - {None}
    eos_ids |= {i for i, t in enumerate(tokens) if t in END_OF_TURN_TEXTS}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", defaults["add_bos"]))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    set_bos_eos(backend, bos if add_bos else None, eos if add_eos else None)

    templates = {
        key.removeprefix("tokenizer.chat_template").lstrip(".") or "default": value
        for key, value in meta.items()
        if key.startswith("tokenizer.chat_template")
    }
    names = {
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": token_id("unknown_token_id"),
        "pad_token": token_id("padding_token_id"),
    }
    return TokenizerParts(
        backend,
        bos_token_id=bos,
        eos_token_ids=eos_ids,
        chat_templates=templates,
        template_tokens={k: tokens[i] for k, i in names.items() if i is not None},
        name=str(path),
    )


def _backend(
    kind: str, meta: dict[str, Any], tokens: list[str], types: list[int], path: Path
) -> tuple[tokenizers.Tokenizer, dict[str, Any]]:
    """The backend for `kind`, and llama.cpp's defaults for its BOS/EOS ids and add_bos
    where the file does not say."""
    pre = meta.get("tokenizer.ggml.pre") or "default"
    if kind == "gpt2":
        merges = meta.get("tokenizer.ggml.merges")
        if merges is None:
            raise ValueError(f"{path}: gpt2 tokenizer without tokenizer.ggml.merges")
        backend = byte_level_bpe(tokens, merges, pre, str(path))
        return backend, {"bos": None, "eos": None, "add_bos": pre in IGNORE_MERGES}
    if kind == "llama":
        vocab = SpmVocab(
            pieces=tokens,
            scores=meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens),
            types=types,
            add_dummy_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
            remove_extra_whitespaces=bool(
                meta.get("tokenizer.ggml.remove_extra_whitespaces", False)
            ),
            unk_id=meta.get("tokenizer.ggml.unknown_token_id", 0),
            source=str(path),
        )
        return sentencepiece_backend(vocab), {"bos": 1, "eos": 2, "add_bos": True}
    raise ValueError(
        f"{path}: tokenizer.ggml.model is {kind!r}; supported: 'gpt2' (byte-level BPE) "
        "and 'llama' (sentencepiece)"
    )


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The `tokenizer.*` metadata of a GGUF file, as Python values."""
    if not path.is_file():
        raise ValueError(f"{path}: no such GGUF file")
    # Imported when used: they load the gguf package, which HF directories do not need.
    from gguf import GGUFValueType

    from lutlm.formats.gguf import open_gguf

    try:
        reader = open_gguf(path)
    except Exception as e:  # the gguf package raises assorted errors on bad files
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
    meta: dict[str, Any] = {}
    for name, f in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        try:
            if f.types[0] == GGUFValueType.ARRAY:
                if f.types[-1] == GGUFValueType.STRING:
                    meta[name] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
                elif f.data:
                    meta[name] = np.concatenate([f.parts[i] for i in f.data]).tolist()
                else:
                    meta[name] = []
            elif f.types[0] == GGUFValueType.STRING:
                meta[name] = bytes(f.parts[f.data[0]]).decode("utf-8")
            else:
                meta[name] = f.parts[f.data[0]][0].item()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: metadata {name} is not UTF-8 ({e})") from e
    return meta
