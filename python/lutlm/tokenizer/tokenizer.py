"""`Tokenizer`: a model's `tokenizers.Tokenizer` plus what the engine needs around it: the
BOS id, the set of end-of-sequence ids, the chat templates, and streaming detokenization.

Built from a GGUF file's metadata (gguf_vocab.py) or an HF directory (hf_directory.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from lutlm.tokenizer.chat_template import render_chat_template
from lutlm.tokenizer.gguf_vocab import read_gguf_tokenizer
from lutlm.tokenizer.hf_directory import read_hf_tokenizer, write_hf_tokenizer
from lutlm.tokenizer.incremental import IncrementalDecoder
from lutlm.tokenizer.special_tokens import TokenizerParts


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
        return cls._from_parts(read_gguf_tokenizer(Path(path)))

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
        return cls._from_parts(read_hf_tokenizer(path))

    @classmethod
    def _from_parts(cls, parts: TokenizerParts) -> Tokenizer:
        return cls(
            parts.backend,
            bos_token_id=parts.bos_token_id,
            eos_token_ids=parts.eos_token_ids,
            chat_templates=parts.chat_templates,
            template_tokens=parts.template_tokens,
            name=parts.name,
        )

    def save_pretrained(self, path: str | Path) -> None:
        """Write this tokenizer as an HF directory that `from_pretrained` reads back the same.

        Writes tokenizer.json (the backend, whose post-processor adds BOS/EOS),
        tokenizer_config.json (the special tokens' texts and the chat templates) and
        generation_config.json (every end-of-sequence id, and the BOS id).

        Args:
            path: the directory (created if missing).
        """
        write_hf_tokenizer(
            path,
            self.backend,
            bos_token_id=self.bos_token_id,
            eos_token_ids=self.eos_token_ids,
            chat_templates=self.chat_templates,
            template_tokens=self.template_tokens,
        )

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
                budget (lutlm.tokenizer.template_budget.TEMPLATE_*), naming the tokenizer and the
                template.
        """
        variables = {
            **self.template_tokens,
            **kwargs,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
        }
        return render_chat_template(self.name, self.chat_templates, variables, chat_template)
