"""Text to token ids and back: one `Tokenizer` for GGUF files and HF model directories.

A `Tokenizer` wraps a `tokenizers.Tokenizer` (the Rust library does the encoding and decoding)
and keeps what the engine needs around it: the BOS id, the set of end-of-sequence ids, the chat
templates, and streaming detokenization (`IncrementalDecoder`).

Sources:

- A GGUF file's `tokenizer.*` metadata. `tokenizer.ggml.model` names the kind:
  `gpt2` is byte-level BPE (vocabulary plus merges; the text is first split by the regexes that
  `tokenizer.ggml.pre` names, see `BYTE_LEVEL_SPLITS`); `llama` is a sentencepiece vocabulary
  (pieces with scores, "▁" for a space, `<0xXX>` byte tokens for characters outside it), encoded
  as llama.cpp does: adjacent pieces merge best score first. Tokens typed CONTROL or
  USER_DEFINED are matched whole inside text (CONTROL ones are special: `decode` drops them).
- An HF directory: `tokenizer.json`, else `tokenizer.model` (sentencepiece, read here straight
  from its protobuf bytes); `tokenizer_config.json` (bos/eos tokens, add_bos_token, chat
  template), `chat_template.jinja`/`chat_template.json`, and the `eos_token_id` of
  `generation_config.json` and `config.json` (an int or a list).

Chat templates are rendered with jinja2's `ImmutableSandboxedEnvironment`, with the globals HF
templates expect (`raise_exception`, `strftime_now`, `bos_token`, `eos_token`, ...), under a time
and a size budget (`TEMPLATE_SECONDS`, `TEMPLATE_MIN_SIZE`): a template that loops without end,
recurses, or builds huge strings or ranges fails with a ValueError instead of hanging its thread.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import tokenizers
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from lutlm.formats.json_object import read_json_object


class TokenType(enum.IntEnum):
    """Token types, numbered as in GGUF's `tokenizer.ggml.token_type` and sentencepiece."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


SPACE = "\u2581"  # "▁": sentencepiece's spelling of a space

# Byte-level BPE pre-tokenizers: the text is split by each regex in turn (matches and the text
# between them become separate pieces), then BPE runs inside each piece. Names are the values of
# GGUF's `tokenizer.ggml.pre` (llama.cpp's names); each regex list is the one the model's own
# tokenizer.json uses.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTION}"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTION}"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BLOOM = r" ?[^(\s|.,!?…。，、।۔،)]+"
_SPLIT_FAMILIES: list[tuple[str, tuple[str, ...]]] = [
    ("gpt-2 phi-2 roberta-bpe mpt olmo jais gigachat jina-es jina-de jina-v1-en", (_GPT2,)),
    ("jina-v2-es jina-v2-de jina-v2-code", (_GPT2,)),
    ("smollm starcoder refact command-r codeshell exaone minerva-7b", (r"\p{N}", _GPT2)),
    ("llama3 llama-v3 llama-bpe falcon3 dbrx smaug-bpe chatglm-bpe", (_LLAMA3,)),
    ("qwen2 stablelm2 megrez deepseek-r1-qwen", (_QWEN2,)),
    ("deepseek-coder", (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}")),
    ("falcon", (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]")),
    ("tekken", (_TEKKEN,)),
    ("gpt-4o llama4", (_GPT4O,)),
    ("bloom gpt3-finnish poro-chat", (_BLOOM,)),
    ("viking", (_BLOOM, r"\p{N}")),
    # What llama.cpp uses for a file that names no pre-tokenizer.
    ("default", (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")),
]
BYTE_LEVEL_SPLITS: dict[str, tuple[str, ...]] = {
    name: regexes for names, regexes in _SPLIT_FAMILIES for name in names.split()
}
# Pre-tokenizers whose BPE first looks the whole piece up in the vocabulary, and which add BOS
# when the file does not say (llama.cpp's defaults for them).
_IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "tekken"}

# Tokens that end a turn, by their text. A GGUF stores one eos id; llama.cpp also stops on these,
# and so do the models' own generation configs (Qwen2.5: <|im_end|> and <|endoftext|>).
END_OF_TURN_TEXTS = frozenset(
    {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"}
)


class Tokenizer:
    """A model's tokenizer: `tokenizers.Tokenizer` plus special ids and chat templates.

    Build it with `from_gguf` or `from_pretrained`; the constructor is for ready backends.

    Args:
        backend: the `tokenizers.Tokenizer` that encodes and decodes (BOS/EOS are added by its
            post-processor).
        bos_token_id: the BOS id, or None.
        eos_token_ids: every id that ends generation.
        chat_templates: jinja2 sources by name; "default" is the one used unless named.
        template_tokens: variables for the templates besides the messages, such as
            {"bos_token": "<s>", "eos_token": "</s>"}.
        name: where the tokenizer came from, for error messages.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token_id: int | None = None,
        eos_token_ids: Iterable[int] = (),
        chat_templates: Mapping[str, str] | None = None,
        template_tokens: Mapping[str, str] | None = None,
        name: str = "tokenizer",
    ) -> None:
        self.backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_ids: set[int] = {int(i) for i in eos_token_ids}
        self.chat_templates = dict(chat_templates or {})
        self.template_tokens = dict(template_tokens or {})
        self.name = name

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """The tokenizer stored in a GGUF file's metadata.

        Args:
            path: the .gguf file.

        Returns:
            The tokenizer, with BOS/EOS ids, add_bos_token and chat templates from the file.

        Raises:
            ValueError: the file is missing or unreadable, has no tokenizer, or one of a kind
                other than `gpt2`/`llama`, naming the file.
        """
        path = Path(path)
        meta = _read_gguf_tokenizer_metadata(path)
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
        pre = meta.get("tokenizer.ggml.pre") or "default"
        if kind == "gpt2":
            merges = meta.get("tokenizer.ggml.merges")
            if merges is None:
                raise ValueError(f"{path}: gpt2 tokenizer without tokenizer.ggml.merges")
            backend = _byte_level_bpe(tokens, merges, pre, str(path))
            defaults = {"bos": None, "eos": None, "add_bos": pre in _IGNORE_MERGES}
        elif kind == "llama":
            vocab = _SpmVocab(
                pieces=tokens,
                scores=meta.get("tokenizer.ggml.scores") or [0.0] * n,
                types=types,
                add_dummy_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
                remove_extra_whitespaces=bool(
                    meta.get("tokenizer.ggml.remove_extra_whitespaces", False)
                ),
                unk_id=meta.get("tokenizer.ggml.unknown_token_id", 0),
                source=str(path),
            )
            backend = _sentencepiece(vocab)
            defaults = {"bos": 1, "eos": 2, "add_bos": True}
        else:
            raise ValueError(
                f"{path}: tokenizer.ggml.model is {kind!r}; supported: 'gpt2' (byte-level BPE) "
                "and 'llama' (sentencepiece)"
            )
        _add_typed_tokens(backend, tokens, types)

        def token_id(key: str, default: int | None = None) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}", default)
            return int(value) if value is not None and 0 <= int(value) < n else None

        bos = token_id("bos_token_id", defaults["bos"])
        eos = token_id("eos_token_id", defaults["eos"])
        eos_ids = {eos, token_id("eot_token_id"), token_id("eom_token_id")} - {None}
        eos_ids |= {i for i, t in enumerate(tokens) if t in END_OF_TURN_TEXTS}
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", defaults["add_bos"]))
        add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        _set_bos_eos(backend, bos if add_bos else None, eos if add_eos else None)

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
        return cls(
            backend,
            bos_token_id=bos,
            eos_token_ids=eos_ids,
            chat_templates=templates,
            template_tokens={k: tokens[i] for k, i in names.items() if i is not None},
            name=str(path),
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """The tokenizer of an HF model directory.

        Args:
            path: a directory with tokenizer.json or tokenizer.model, and optionally
                tokenizer_config.json, generation_config.json, config.json and
                chat_template.jinja / chat_template.json.

        Returns:
            The tokenizer. EOS ids are the union of tokenizer_config.json's eos_token and the
            eos_token_id of generation_config.json and config.json. BOS/EOS are added as
            tokenizer.json's post-processor says (as transformers does), or for tokenizer.model
            as tokenizer_config.json's add_bos_token (default true) and add_eos_token say.

        Raises:
            ValueError: the directory or its tokenizer file is missing or malformed, naming
                the file and what was expected.
        """
        root = Path(path)
        if not root.is_dir():
            raise ValueError(
                f"{root}: not a directory (expected an HF model directory holding tokenizer.json "
                "or tokenizer.model)"
            )
        config = _read_json(root / "tokenizer_config.json")
        texts = {
            k: _token_text(config.get(k))
            for k in ("bos_token", "eos_token", "unk_token", "pad_token")
        }
        spm = None
        if (root / "tokenizer.json").is_file():
            file = root / "tokenizer.json"
            try:
                backend = tokenizers.Tokenizer.from_file(str(file))
            except Exception as e:  # the Rust side raises plain Exception
                raise ValueError(f"{file}: not a valid tokenizers JSON file ({e})") from e
        elif (root / "tokenizer.model").is_file():
            spm = _read_sentencepiece_model(root / "tokenizer.model")
            backend = _sentencepiece(spm)
            _add_typed_tokens(backend, spm.pieces, spm.types)
            _add_config_tokens(backend, config, root / "tokenizer_config.json")
            for key, i in (("bos_token", spm.bos_id), ("eos_token", spm.eos_id)):
                if texts[key] is None and 0 <= i < len(spm.pieces):
                    texts[key] = spm.pieces[i]
        else:
            raise ValueError(f"{root}: no tokenizer.json or tokenizer.model in this directory")

        bos, eos = (
            None if texts[k] is None else backend.token_to_id(texts[k])
            for k in ("bos_token", "eos_token")
        )
        if spm is not None:  # tokenizer.json has its own post-processor; this has none
            add_bos = config.get("add_bos_token", bos is not None)
            _set_bos_eos(
                backend, bos if add_bos else None, eos if config.get("add_eos_token") else None
            )
        eos_ids = set() if eos is None else {eos}
        for name in ("generation_config.json", "config.json"):
            extra = _read_json(root / name)
            ids = extra.get("eos_token_id")
            eos_ids.update(
                i for i in (ids if isinstance(ids, list) else [ids]) if isinstance(i, int)
            )
            if bos is None and isinstance(extra.get("bos_token_id"), int):
                bos = extra["bos_token_id"]
                texts["bos_token"] = backend.id_to_token(bos)
        return cls(
            backend,
            bos_token_id=bos,
            eos_token_ids=eos_ids,
            chat_templates=_read_chat_templates(root, config),
            template_tokens={k: v for k, v in texts.items() if v is not None},
            name=str(root),
        )

    def save_pretrained(self, path: str | Path) -> None:
        """Write this tokenizer as an HF directory that `from_pretrained` reads back the same.

        Writes tokenizer.json (the backend, whose post-processor adds BOS/EOS),
        tokenizer_config.json (the special tokens' texts and the chat templates) and
        generation_config.json (every end-of-sequence id, and the BOS id).

        Args:
            path: the directory (created if missing).
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(root / "tokenizer.json"))
        config: dict[str, Any] = dict(self.template_tokens)
        if list(self.chat_templates) == ["default"]:
            config["chat_template"] = self.chat_templates["default"]
        elif self.chat_templates:
            config["chat_template"] = [
                {"name": name, "template": source} for name, source in self.chat_templates.items()
            ]
        generation: dict[str, Any] = {"eos_token_id": sorted(self.eos_token_ids)}
        if self.bos_token_id is not None:
            generation["bos_token_id"] = self.bos_token_id
        for name, value in (
            ("tokenizer_config.json", config),
            ("generation_config.json", generation),
        ):
            (root / name).write_text(json.dumps(value, indent=2, ensure_ascii=False), "utf-8")

    # ---------------------------------------------------------------- encoding

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (a model's embedding may be larger)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def chat_template(self) -> str | None:
        """The default chat template's source, or None."""
        return self.chat_templates.get("default")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in it (e.g. <|im_start|>) stay whole.

        Args:
            text: the text.
            add_special_tokens: add BOS/EOS as the model asks (add_bos_token). Pass False for
                the output of `apply_chat_template`, which writes them itself.

        Returns:
            The token ids.
        """
        if len(text) > 4096:
            # encode_batch releases the GIL while it works; encode holds it, which would
            # stall every other thread (the server's event loop) for a long text.
            return self.backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; bytes that do not form complete UTF-8 become U+FFFD.

        Args:
            ids: token ids (ids beyond the vocabulary are dropped).
            skip_special_tokens: leave out special tokens (BOS, EOS, <|im_start|>, ...).

        Returns:
            The text.
        """
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def incremental_decoder(
        self, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
    ) -> IncrementalDecoder:
        """A streaming detokenizer for ids generated after `prompt_ids` (see IncrementalDecoder)."""
        return IncrementalDecoder(self, prompt_ids, skip_special_tokens)

    # ---------------------------------------------------------------- chat

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        chat_template: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """Render a conversation into the prompt text the model was trained on.

        Encode the result with `encode(text, add_special_tokens=False)`: the template writes
        BOS itself where the model wants one.

        Args:
            messages: [{"role": "system" | "user" | "assistant" | ..., "content": ...}, ...].
            add_generation_prompt: end with the header of an assistant turn.
            chat_template: a template name (e.g. "tool_use") or a jinja2 source; None for the
                model's default.
            tools: tool (function) definitions, for templates that take them.
            **kwargs: further template variables.

        Returns:
            The prompt text.

        Raises:
            ValueError: the model has no chat template (or none of that name), or the template
                failed (including its own raise_exception) or went over its time or size
                budget (module constants TEMPLATE_*), naming the tokenizer and the template.
        """
        if chat_template is None or chat_template in self.chat_templates:
            source = self.chat_templates.get(chat_template or "default")
            if source is None:
                have = f"; it has: {', '.join(self.chat_templates)}" if self.chat_templates else ""
                raise ValueError(
                    f"{self.name}: the model has no chat template named "
                    f"{chat_template or 'default'!r}{have}; pass chat_template= a jinja2 "
                    "template or format the prompt yourself"
                )
        elif "{" in chat_template:
            source = chat_template
        else:
            raise ValueError(f"{self.name}: no chat template named {chat_template!r}")
        variables = {
            **self.template_tokens,
            **kwargs,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
        }
        which = (
            "the chat_template argument"
            if source is chat_template
            else f"chat template {chat_template or 'default'!r}"
        )
        try:
            template = _compile_template(source)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from e
        try:
            return _render(template, variables)
        except _OverBudget as e:
            raise ValueError(f"{self.name}: {which} {e}") from None
        except RecursionError:
            raise ValueError(
                f"{self.name}: {which} recursed too deeply (a macro that calls itself without end?)"
            ) from None
        except MemoryError:
            raise ValueError(f"{self.name}: {which} ran out of memory") from None
        except jinja2.TemplateError as e:
            raise ValueError(f"{self.name}: chat template failed: {e}") from e
        except Exception as e:  # Python's errors from the template's expressions
            raise ValueError(f"{self.name}: chat template failed: {type(e).__name__}: {e}") from e


class IncrementalDecoder:
    """Streaming detokenization: text for ids as they arrive, complete characters only.

    Note: each step decodes a short window of ids and emits what the window's text gained
    beyond the text already shown:

        window:  [ ids already shown | new ids ]
        text:      shown text        + new text  <- emitted once it ends in a whole character

    Decoding a window rather than single ids keeps what depends on neighbours right (a
    sentencepiece space after the first token, the bytes of a character split across byte
    tokens). While the window's text ends in U+FFFD a character is incomplete: nothing is
    emitted and the window keeps growing, so the bytes are decoded again once the rest arrives.
    When text is emitted the window restarts at the new ids' start, a point where the text was
    whole, so the emissions concatenate to `decode` of all generated ids.

    Args:
        tokenizer: the tokenizer.
        prompt_ids: ids already in the context (not emitted; the last few give the first
            generated token its left context).
        skip_special_tokens: as in `Tokenizer.decode`.
    """

    CONTEXT = 5  # prompt ids kept as left context

    def __init__(
        self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._window = [int(i) for i in list(prompt_ids)[-self.CONTEXT :]]
        self._num_shown = len(self._window)  # ids in the window whose text was emitted
        self._shown = self._decode(self._window)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.backend.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, ids: int | Iterable[int]) -> str:
        """Take newly generated ids.

        Args:
            ids: one id or several.

        Returns:
            The text they complete ("" while a character is still incomplete).
        """
        self._window.extend([int(ids)] if isinstance(ids, (int, np.integer)) else map(int, ids))
        text = self._decode(self._window)
        if len(text) <= len(self._shown) or text.endswith("\ufffd"):
            return ""
        return self._emit(text)

    def flush(self) -> str:
        """The text still held back at the end of generation (U+FFFD for incomplete bytes)."""
        return self._emit(self._decode(self._window))

    def _emit(self, text: str) -> str:
        new = text[len(self._shown) :]
        del self._window[: self._num_shown]
        self._num_shown = len(self._window)
        self._shown = self._decode(self._window)
        return new


# -------------------------------------------------------------------- building backends


@dataclass(slots=True)
class _SpmVocab:
    """A sentencepiece-style vocabulary, from GGUF metadata or a tokenizer.model."""

    pieces: list[str]
    scores: list[float]
    types: list[int]
    unigram: bool = False  # else BPE: adjacent pieces merge, best merged score first
    add_dummy_prefix: bool = True  # "hi" is encoded as " hi"
    remove_extra_whitespaces: bool = False  # strip spaces at the ends, collapse runs of them
    precompiled_charsmap: bytes = b""  # sentencepiece's normalization (e.g. NFKC) table
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    source: str = field(default="", compare=False)


def _sentencepiece(vocab: _SpmVocab) -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like sentencepiece (llama.cpp for BPE vocabularies).

    Spaces become "▁" in the normalizer, per text segment between special tokens: a segment
    after a special token also gets the dummy prefix, as llama.cpp does.
    """
    pieces, types = vocab.pieces, vocab.types
    byte_fallback = TokenType.BYTE in types
    unk = vocab.unk_id if 0 <= vocab.unk_id < len(pieces) else None
    try:
        if vocab.unigram:
            model = models.Unigram(list(zip(pieces, vocab.scores, strict=True)), unk, byte_fallback)
        else:
            model = models.BPE(
                {p: i for i, p in enumerate(pieces)},
                _merges_by_score(vocab),
                unk_token=None if unk is None else pieces[unk],
                fuse_unk=True,
                byte_fallback=byte_fallback,
            )
    except Exception as e:
        raise ValueError(f"{vocab.source}: sentencepiece vocabulary rejected ({e})") from e
    backend = tokenizers.Tokenizer(model)
    steps: list[normalizers.Normalizer] = []
    if vocab.precompiled_charsmap:
        steps.append(normalizers.Precompiled(vocab.precompiled_charsmap))
    if vocab.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex(r"\A +| +\z"), ""))
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    if vocab.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPACE))
    steps.append(normalizers.Replace(" ", SPACE))
    backend.normalizer = normalizers.Sequence(steps)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _merges_by_score(vocab: _SpmVocab) -> list[tuple[str, str]]:
    """BPE merges implied by a scored vocabulary: every split of a normal piece into two normal
    pieces, best-scoring result first (ties: lower id first)."""
    normal = {
        p: i
        for i, (p, t) in enumerate(zip(vocab.pieces, vocab.types, strict=True))
        if t == TokenType.NORMAL
    }
    ranked = []
    for piece, i in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-vocab.scores[i], i, normal[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _byte_level_bpe(
    tokens: list[str], merges: list[str], pre: str, source: str
) -> tokenizers.Tokenizer:
    """GPT-2 style byte-level BPE; `pre` names the pre-tokenizer (see BYTE_LEVEL_SPLITS)."""
    if pre not in BYTE_LEVEL_SPLITS:
        raise ValueError(
            f"{source}: unsupported pre-tokenizer tokenizer.ggml.pre={pre!r}; supported: "
            f"{', '.join(sorted(BYTE_LEVEL_SPLITS))}"
        )
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1)
        if cut < 0:
            raise ValueError(f"{source}: merge {merge!r} is not two tokens separated by a space")
        pairs.append((merge[:cut], merge[cut + 1 :]))
    try:
        model = models.BPE(
            {t: i for i, t in enumerate(tokens)}, pairs, ignore_merges=pre in _IGNORE_MERGES
        )
    except Exception as e:
        raise ValueError(f"{source}: BPE vocabulary or merges rejected ({e})") from e
    backend = tokenizers.Tokenizer(model)
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in BYTE_LEVEL_SPLITS[pre]]
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _add_typed_tokens(backend: tokenizers.Tokenizer, texts: list[str], types: list[int]) -> None:
    """Make CONTROL/UNKNOWN tokens special and USER_DEFINED ones added tokens: both are
    matched whole in text, before the model; only special ones are dropped by decode."""
    pairs = list(zip(texts, types, strict=True))
    special = [t for t, k in pairs if k in (TokenType.CONTROL, TokenType.UNKNOWN)]
    user = [t for t, k in pairs if k == TokenType.USER_DEFINED]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])


def _add_config_tokens(backend: tokenizers.Tokenizer, config: dict, file: Path) -> None:
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


def _set_bos_eos(backend: tokenizers.Tokenizer, bos_id: int | None, eos_id: int | None) -> None:
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


# -------------------------------------------------------------------- reading files


def _read_json(file: Path) -> dict:
    """A JSON object file, or {} when it does not exist."""
    return read_json_object(file) if file.is_file() else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_chat_templates(root: Path, config: dict) -> dict[str, str]:
    """Chat templates by name: chat_template.jinja, else chat_template.json, else
    tokenizer_config.json's chat_template (a string, or a list of {name, template})."""
    if (root / "chat_template.jinja").is_file():
        value: Any = (root / "chat_template.jinja").read_text(encoding="utf-8")
    else:
        value = _read_json(root / "chat_template.json").get("chat_template")
        if value is None:
            value = config.get("chat_template")
    if value is None:
        return {}
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, list) and all(isinstance(t, dict) and "name" in t for t in value):
        return {t["name"]: t["template"] for t in value}
    raise ValueError(f"{root}: chat_template is neither a string nor a list of {{name, template}}")


def _read_gguf_tokenizer_metadata(path: Path) -> dict[str, Any]:
    """The `tokenizer.*` metadata of a GGUF file, as Python values."""
    if not path.is_file():
        raise ValueError(f"{path}: no such GGUF file")
    from gguf import GGUFValueType  # the loader's dependency too; import when used

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


def _read_sentencepiece_model(file: Path) -> _SpmVocab:
    """Read a sentencepiece tokenizer.model (a ModelProto) without protobuf.

    Fields used (sentencepiece_model.proto): ModelProto 1 pieces {1 piece, 2 score, 3 type},
    2 trainer_spec {3 model_type (1 unigram, 2 bpe), 40 unk_id, 41 bos_id, 42 eos_id},
    3 normalizer_spec {2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces}.
    """
    try:
        data = file.read_bytes()
        pieces, scores, types = [], [], []
        trainer: dict[int, Any] = {}
        normalizer: dict[int, Any] = {}
        for number, value in _proto_fields(data):
            if number == 1:
                piece = dict(_proto_fields(value))
                pieces.append(piece[1].decode("utf-8"))
                scores.append(struct.unpack("<f", piece[2])[0] if 2 in piece else 0.0)
                types.append(piece.get(3, TokenType.NORMAL))
            elif number == 2:
                trainer = dict(_proto_fields(value))
            elif number == 3:
                normalizer = dict(_proto_fields(value))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as e:
        raise ValueError(f"{file}: not a sentencepiece model ({e})") from e
    model_type = trainer.get(3, 1)
    if not pieces or model_type not in (1, 2):
        kind = {3: "word", 4: "char"}.get(model_type, model_type)
        raise ValueError(
            f"{file}: expected a sentencepiece unigram or BPE model with pieces; "
            f"found {len(pieces)} pieces, model type {kind}"
        )

    def signed(value: int) -> int:  # int32 fields are varints of the 64-bit two's complement
        return value - (1 << 64) if value >= 1 << 63 else value

    return _SpmVocab(
        pieces=pieces,
        scores=scores,
        types=types,
        unigram=model_type == 1,
        add_dummy_prefix=bool(normalizer.get(3, 1)),
        remove_extra_whitespaces=bool(normalizer.get(4, 1)),
        precompiled_charsmap=normalizer.get(2, b""),
        unk_id=signed(trainer.get(40, 0)),
        bos_id=signed(trainer.get(41, 1)),
        eos_id=signed(trainer.get(42, 2)),
        source=str(file),
    )


def _proto_fields(data: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= end:
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while pos < end:
        key = varint()
        wire = key & 7
        if wire == 0:
            value: Any = varint()
        elif wire in (1, 2, 5):
            size = {1: 8, 5: 4}.get(wire) or varint()
            if pos + size > end:
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value


# -------------------------------------------------------------------- chat templates


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    # jinja2's own tojson escapes <, >, & and ' for HTML; prompts want them as they are.
    return json.dumps(
        value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks in HF):
    renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


# Budgets of one chat-template render. Templates come with model files and run on request
# data: a broken or hostile one must fail its request with a clear error, not hang the
# thread that renders it or fill its memory. Generous for real templates, which render a
# conversation in about a millisecond and produce a few times its size.
TEMPLATE_SECONDS = 2.0  # per render, plus TEMPLATE_SECONDS_PER_MB of input
TEMPLATE_SECONDS_PER_MB = 1.0
TEMPLATE_MIN_SIZE = 4 * 2**20  # characters of output, items of any string or list built
TEMPLATE_SIZE_PER_INPUT = 8  # ... or this many times the input's characters when larger
_MAX_INT_BITS = 1 << 16  # integers built by ** and * (str() refuses beyond ~14k bits anyway)


class _OverBudget(Exception):
    """A render went over one of its budgets; the message says which."""


@dataclass(slots=True)
class _Budget:
    seconds: float
    size: int
    deadline: float


# The render in progress in this thread (context), read by the environment's hooks. None
# outside a render: compile-time constant folding then gets the minimum size budget.
_budget: ContextVar[_Budget | None] = ContextVar("lutlm_template_budget", default=None)


def _size_budget() -> int:
    b = _budget.get()
    return TEMPLATE_MIN_SIZE if b is None else b.size


def _check_size(n: int, what: str) -> None:
    if n > _size_budget():
        raise _OverBudget(
            f"would build {what} of {n} items, over its size budget of {_size_budget()}"
        )


def _check_time() -> None:
    b = _budget.get()
    if b is not None and time.monotonic() > b.deadline:
        raise _OverBudget(f"ran past its time budget of {b.seconds:.3g} s")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_ints(args: Iterable[Any], what: str) -> None:
    """Widths and counts: a value past the size budget would build something past it."""
    for a in args:
        n = _int(a)
        if n is not None and n > _size_budget():
            raise _OverBudget(f"asked for {what}({n}), over its size budget of {_size_budget()}")


_PERCENT_WIDTHS = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_format(fmt: str, args: tuple, style: str) -> None:
    """The widths written in a %- or {}-format string, and the arguments that give widths
    (`%*d`, `{:{}}`) when it has such fields."""
    if style == "%":
        widths = [w for m in _PERCENT_WIDTHS.finditer(fmt) for w in m.groups() if w]
        nested = "*" in widths
    else:
        widths = [w for f in re.findall(r"\{[^{}]*\}", fmt) for w in re.findall(r"\d+", f)]
        nested = re.search(r"\{[^{}]*:[^{}]*\{", fmt) is not None
    for w in widths:
        if w != "*" and (len(w) > 9 or int(w) > _size_budget()):
            raise _OverBudget(
                f"asked for a format width of {w}, over its size budget of {_size_budget()}"
            )
    if nested:
        _check_ints(args, "a format width ")


def _range(*args: int) -> range:
    r = range(*args)
    _check_size(len(r), f"range({', '.join(map(repr, args))})")
    return r


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else None


def _deep_size(value: Any) -> int:
    """Items of a string or list, a list's strings counted by their characters: a list of
    one long string repeated is as long as its text once printed."""
    if isinstance(value, (list, tuple)):
        return sum(_sized(v) or 1 for v in value)
    return _sized(value) or 1


def _check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse results past the budgets before computing them: one * or ** can ask for
    gigabytes in a single C call, which no time check can interrupt."""
    a, b = _int(left), _int(right)
    if op == "**" and a is not None and b is not None and b > 0 and abs(a) > 1:
        if b * abs(a).bit_length() > _MAX_INT_BITS:
            raise _OverBudget(f"would compute {a} ** {b}, over its budget of {_MAX_INT_BITS} bits")
    elif op == "*" and a is not None and b is not None:
        if a.bit_length() + b.bit_length() > _MAX_INT_BITS:
            raise _OverBudget(f"would compute a product over its budget of {_MAX_INT_BITS} bits")
    elif op == "*":
        for seq, n in ((left, b), (right, a)):
            if n is not None and _sized(seq) is not None:
                _check_size(_deep_size(seq) * n, f"a {type(seq).__name__} * {n}")
    elif op == "+":
        la, lb = _sized(left), _sized(right)
        if la is not None and lb is not None:
            _check_size(la + lb, "a sum")
    elif op == "%" and isinstance(left, str):
        _check_format(left, right if isinstance(right, tuple) else (right,), "%")


# Filters and str methods that can build much more than they are given. Widths and counts
# are checked against the size budget, and the strings they repeat against how often.
_WIDTH_FILTERS = ("center", "indent", "wordwrap", "batch", "slice")
_WIDTH_METHODS = ("ljust", "rjust", "center", "zfill", "expandtabs")


def _check_filter(name: str, a: dict[str, Any]) -> dict[str, Any]:
    """Checks a filter call by its bound arguments; the arguments to call it with (an
    iterable that join or sum consume is listed first, to be measured)."""
    if name in _WIDTH_FILTERS:  # not the value filtered, which may be any number
        _check_ints([v for k, v in a.items() if k not in ("value", "s")], name)
    text, width, wrap = a.get("s"), a.get("width"), a.get("wrapstring")
    if name in ("batch", "slice") and a.get("fill_with") is not None:
        count = a.get("linecount", a.get("slices"))
        if _int(count) is not None:
            _check_size(count * _deep_size(a["fill_with"]), f"a {name} with fill_with")
    elif name in ("join", "sum"):
        key = "value" if name == "join" else "iterable"
        items = a[key] = list(a[key])
        sep = a.get("d", "")
        total = sum(_sized(v) or 0 for v in items)
        if isinstance(sep, str):
            total += len(sep) * max(0, len(items) - 1)
        _check_size(total, f"a {name}")
    elif name == "replace" and all(isinstance(v, str) for v in (text, a["old"], a["new"])):
        _check_replace(text, a["old"], a["new"])
    elif name == "indent" and isinstance(text, str) and isinstance(width, str):
        _check_size(len(text) + (text.count("\n") + 1) * len(width), "an indent")
    elif name == "wordwrap" and isinstance(text, str) and isinstance(wrap, str):
        _check_size((len(text) + 1) * (len(wrap) + 1), "a wordwrap")
    elif name == "format" and isinstance(a.get("value"), str):
        _check_format(a["value"], (*a.get("args", ()), *a.get("kwargs", {}).values()), "%")
    return a


def _budgeted_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(f)

    @functools.wraps(f)  # keeps jinja's pass_environment/pass_eval_context marks
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_time()  # map and select call filters once per item, no loop of the template's
        bound = signature.bind(*args, **kwargs)  # a TypeError as the filter would give
        bound.arguments.update(_check_filter(name, dict(bound.arguments)))
        return f(*bound.args, **bound.kwargs)

    return checked


def _check_replace(s: str, old: str, new: str) -> None:
    count = s.count(old) if old else len(s) + 1
    _check_size(len(s) + count * max(0, len(new) - len(old)), "a replace")


def _check_method(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Checks a call of a str method that can build a large string; the arguments to call
    it with (join's iterable, listed to be measured)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str):
        return args
    name = getattr(method, "__name__", "")
    if name in _WIDTH_METHODS:
        _check_ints([*args, *kwargs.values()], name)
    elif name == "replace" and len(args) >= 2:
        if isinstance(args[0], str) and isinstance(args[1], str):
            _check_replace(owner, args[0], args[1])
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        total = sum(_sized(i) or 0 for i in items) + len(owner) * max(0, len(items) - 1)
        _check_size(total, "a join")
        args = (items,)
    return args


def _budgeted_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a template's for loop iterates: the iterable, with the time checked before
    each item."""
    for item in iterable:
        _check_time()
        yield item


class _BudgetedCodeGenerator(CodeGenerator):
    """Checks the time budget at every iteration of every for loop, and compiles `a ~ b`
    to a size-checked join.

    A loop is the only way a template repeats work without a call (which the
    environment checks), so nested loops are what can run for hours; `~` is no binary
    operator that the sandbox can intercept, and doubling a string with it fills memory
    in a few steps.
    """

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Before the generator collects the template's imports: the wrapper is one.
        for loop in list(node.find_all(nodes.For)):
            loop.iter = nodes.Call(
                nodes.ImportedName(f"{__name__}._budgeted_iter"),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.iter.lineno,
            )
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with calls, operators, ranges, ~ and (through _BudgetedCodeGenerator)
    loop iterations checked against the budgets of the render in progress.

    The time is checked where a template can repeat work (each loop iteration and call),
    not by a signal: the server renders in worker threads, and signals reach only the main
    thread. Sizes are checked before a string or list is built wherever one operation can
    build a large one (*, **, +, %, ~, widths, join, replace), since no time check can
    interrupt a single C call that fills gigabytes.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    code_generator_class = _BudgetedCodeGenerator

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and type(left) is str and type(right) is str:  # most of them
            if len(left) + len(right) > _size_budget():
                _check_size(len(left) + len(right), "a sum")
            return left + right
        _check_binop(operator, left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        args = _check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        n = _sized(result)
        if n is not None:
            _check_size(n, "the result of " + getattr(__obj, "__name__", "a call") + "()")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, (*args, *kwargs.values()), "{}")
            return wrapper(*args, **kwargs)

        return checked

    def checked_concat(self, text: str) -> str:
        _check_size(len(text), "a ~ concatenation")
        return text


@lru_cache(maxsize=1)
def _template_environment() -> ImmutableSandboxedEnvironment:
    env = _BudgetedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
    )
    env.filters["tojson"] = _tojson
    for name in (*_WIDTH_FILTERS, "join", "sum", "replace", "format"):
        env.filters[name] = _budgeted_filter(name, env.filters[name])
    env.globals["range"] = _range
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile_template(source: str) -> jinja2.Template:
    try:
        return _template_environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template does not parse: {e}") from e
    except RecursionError as e:  # nesting deeper than the parser recurses
        raise ValueError("chat template does not parse: it nests too deeply") from e


def _input_size(*values: Any) -> int:
    """Characters of strings in nested lists and dicts (request data), counted without
    recursion: the data may nest deeper than Python recurses."""
    total, stack = 0, list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, Mapping):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return total


def _render(template: jinja2.Template, variables: dict[str, Any]) -> str:
    """Render under the time and size budgets.

    Raises:
        _OverBudget: a budget ran out.
        RecursionError, MemoryError, jinja2.TemplateError, ...: what the template raised.
    """
    size = _input_size(variables)
    seconds = TEMPLATE_SECONDS + TEMPLATE_SECONDS_PER_MB * size / 1e6
    budget = _Budget(
        seconds, max(TEMPLATE_MIN_SIZE, TEMPLATE_SIZE_PER_INPUT * size), time.monotonic() + seconds
    )
    token = _budget.set(budget)
    try:
        out, n = [], 0
        for chunk in template.generate(**variables):
            n += len(chunk)
            if n > budget.size:
                raise _OverBudget(f"produced more than its size budget of {budget.size} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _budget.reset(token)
