"""Streaming detokenization: text for token ids as they are generated."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import tokenizers


class _HasBackend(Protocol):
    """What the decoder reads of a `Tokenizer`: a Protocol, as tokenizer.py imports this module."""

    backend: tokenizers.Tokenizer


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
        self,
        tokenizer: _HasBackend,
        prompt_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
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
