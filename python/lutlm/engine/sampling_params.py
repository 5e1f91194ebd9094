"""Per-request sampling parameters (the vLLM / OpenAI set), validated on construction."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from lutlm.engine.errors import InvalidRequest

# OpenAI clips logit_bias values to this range; -100 makes a token practically impossible
# (its probability is multiplied by e^-100, about 4e-44) and +100 practically certain.
LOGIT_BIAS_LIMIT = 100.0
# The most top logprobs a request may ask for (OpenAI's top_logprobs, vLLM's default cap).
MAX_LOGPROBS = 20
# The most draft tokens prompt-lookup decoding may verify in one step: beyond this the
# verification rows cost more than the longest runs of accepted drafts save.
MAX_PROMPT_LOOKUP = 32


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int(name: str, value: object, allowed: str) -> int:
    if not _is_int(value):
        raise InvalidRequest(
            f"{name} must be an integer ({allowed}), got {value!r}", param=name.split("[")[0]
        )
    return int(value)  # type: ignore[call-overload]


def _float(name: str, value: object, allowed: str) -> float:
    if not _is_real(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise InvalidRequest(
            f"{name} must be a finite number ({allowed}), got {value!r}",
            param=name.split("[")[0],
        )
    return float(value)  # type: ignore[arg-type]


@dataclass(slots=True, kw_only=True)
class SamplingParams:
    """How to pick the tokens of one request, and when to stop.

    Fields are keyword-only; defaults follow vLLM. Construction validates every field
    and raises InvalidRequest (a ValueError) naming the parameter and its allowed range.
    It also normalizes: numbers become plain int or float, `stop` given as one string
    becomes a list,
    logit_bias values are clipped to [-100, 100], and None for stop / stop_token_ids /
    logit_bias becomes empty.

    The sampler reads the sampling fields; max_tokens, stop, stop_token_ids, ignore_eos
    and n are for the engine (stop checks, and one sequence per n with its own
    Generator, see sampler.make_generator).
    """

    n: int = 1  # sequences to generate for the prompt, >= 1
    max_tokens: int = 16  # tokens to generate at most, >= 0
    temperature: float = 1.0  # >= 0; 0 = greedy (argmax)
    top_p: float = 1.0  # (0, 1]; 1 = off
    top_k: int = -1  # -1 or 0 = off, else >= 1
    min_p: float = 0.0  # [0, 1]; 0 = off; relative to the top token's prob
    repetition_penalty: float = 1.0  # > 0; 1 = off; HF style, prompt and output tokens
    presence_penalty: float = 0.0  # [-2, 2]; OpenAI style, output tokens only
    frequency_penalty: float = 0.0  # [-2, 2]; OpenAI style, output tokens only
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added logit
    seed: int | None = None  # None = fresh entropy per sequence
    stop: list[str] = field(default_factory=list)  # stop strings (engine's check)
    stop_token_ids: list[int] = field(default_factory=list)  # stop tokens besides EOS
    ignore_eos: bool = False  # keep generating past EOS (engine's check)
    logprobs: int | None = None  # None, or number of top logprobs 0..20 to return
    prompt_logprobs: int | None = None  # logprobs of the prompt tokens (+ top k), like logprobs
    # Prompt-lookup decoding: draft up to this many tokens per step by copying what
    # followed an earlier occurrence of the sequence's last n-gram (in the prompt or the
    # output so far), verified in one forward pass; 0 = off. Greedy tokens are exactly
    # those without it; sampled tokens have the same distribution, but a seed gives a
    # different (equally likely) sequence because the random draws are used differently.
    prompt_lookup: int = 0

    def __post_init__(self) -> None:
        self.n = _int("n", self.n, ">= 1")
        if self.n < 1:
            raise InvalidRequest(f"n must be at least 1, got {self.n}", param="n")
        self.max_tokens = _int("max_tokens", self.max_tokens, ">= 0")
        if self.max_tokens < 0:
            raise InvalidRequest(
                f"max_tokens must be at least 0, got {self.max_tokens}", param="max_tokens"
            )
        self.temperature = _float("temperature", self.temperature, ">= 0")
        if self.temperature < 0:
            raise InvalidRequest(
                f"temperature must be at least 0, got {self.temperature}", param="temperature"
            )
        self.top_p = _float("top_p", self.top_p, "in (0, 1]")
        if not 0 < self.top_p <= 1:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}", param="top_p")
        self.top_k = _int("top_k", self.top_k, "-1 or 0 to disable, or >= 1")
        if self.top_k < -1:
            raise InvalidRequest(
                f"top_k must be -1 or 0 (disabled) or at least 1, got {self.top_k}", param="top_k"
            )
        self.min_p = _float("min_p", self.min_p, "in [0, 1]")
        if not 0 <= self.min_p <= 1:
            raise InvalidRequest(f"min_p must be in [0, 1], got {self.min_p}", param="min_p")
        self.repetition_penalty = _float("repetition_penalty", self.repetition_penalty, "> 0")
        if self.repetition_penalty <= 0:
            raise InvalidRequest(
                f"repetition_penalty must be greater than 0, got {self.repetition_penalty}",
                param="repetition_penalty",
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = _float(name, getattr(self, name), "in [-2, 2]")
            if not -2 <= value <= 2:
                raise InvalidRequest(f"{name} must be in [-2, 2], got {value}", param=name)
            setattr(self, name, value)
        self.logit_bias = self._checked_logit_bias(self.logit_bias)
        if self.seed is not None:
            self.seed = _int("seed", self.seed, "or None")
        self.stop = self._checked_stop(self.stop)
        self.stop_token_ids = self._checked_stop_token_ids(self.stop_token_ids)
        if not isinstance(self.ignore_eos, bool):
            raise InvalidRequest(
                f"ignore_eos must be a bool, got {self.ignore_eos!r}", param="ignore_eos"
            )
        self.prompt_lookup = _int("prompt_lookup", self.prompt_lookup, f"0..{MAX_PROMPT_LOOKUP}")
        if not 0 <= self.prompt_lookup <= MAX_PROMPT_LOOKUP:
            raise InvalidRequest(
                f"prompt_lookup must be in [0, {MAX_PROMPT_LOOKUP}], got {self.prompt_lookup}",
                param="prompt_lookup",
            )
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is None:
                continue
            value = _int(name, value, f"0..{MAX_LOGPROBS} or None")
            if not 0 <= value <= MAX_LOGPROBS:
                raise InvalidRequest(
                    f"{name} must be in [0, {MAX_LOGPROBS}] or None, got {value}", param=name
                )
            setattr(self, name, value)

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax (temperature 0)."""
        return self.temperature == 0.0

    def check_vocab(self, vocab_size: int) -> None:
        """Check that every token id the request names is below vocab_size.

        The engine should call this when it admits a request: the sampler raises for an
        out-of-range logit_bias id too, but by then the whole batch's step fails.

        Args:
            vocab_size: the tokenizer's vocabulary size (not the padded logits width).

        Raises:
            InvalidRequest: naming the parameter and the offending id.
        """
        for name, ids in (("logit_bias", self.logit_bias), ("stop_token_ids", self.stop_token_ids)):
            bad = [i for i in ids if i >= vocab_size]
            if bad:
                raise InvalidRequest(
                    f"{name} token id {bad[0]} is out of range for vocab size {vocab_size}",
                    param=name,
                )

    @staticmethod
    def _checked_logit_bias(bias: object) -> dict[int, float]:
        if bias is None:
            return {}
        if not isinstance(bias, dict):
            raise InvalidRequest(
                f"logit_bias must be a dict of token id -> bias, got {type(bias).__name__}",
                param="logit_bias",
            )
        out: dict[int, float] = {}
        for key, value in bias.items():
            if not _is_int(key) or key < 0:
                raise InvalidRequest(
                    f"logit_bias keys must be token ids (int >= 0), got {key!r}", param="logit_bias"
                )
            value = _float(f"logit_bias[{key}]", value, "clipped to [-100, 100]")
            out[int(key)] = min(max(value, -LOGIT_BIAS_LIMIT), LOGIT_BIAS_LIMIT)
        return out

    @staticmethod
    def _checked_stop(stop: object) -> list[str]:
        if stop is None:
            return []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest(
                f"stop must be a string or a list of strings, got {stop!r}", param="stop"
            )
        if any(s == "" for s in stop):
            raise InvalidRequest("stop strings must not be empty", param="stop")
        return list(stop)

    @staticmethod
    def _checked_stop_token_ids(ids: object) -> list[int]:
        if ids is None:
            return []
        if not isinstance(ids, (list, tuple)):
            raise InvalidRequest(
                f"stop_token_ids must be a list of token ids, got {ids!r}", param="stop_token_ids"
            )
        for i in ids:
            if not _is_int(i) or i < 0:
                raise InvalidRequest(
                    f"stop_token_ids must hold token ids (int >= 0), got {i!r}",
                    param="stop_token_ids",
                )
        return [int(i) for i in ids]
