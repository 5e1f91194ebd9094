"""Byte-level BPE (GPT-2 style) from a GGUF `gpt2` vocabulary: vocabulary plus merges, the
text first split by the regexes that `tokenizer.ggml.pre` names (`BYTE_LEVEL_SPLITS`)."""

from __future__ import annotations

import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers

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
IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "tekken"}


def byte_level_bpe(
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
            {t: i for i, t in enumerate(tokens)}, pairs, ignore_merges=pre in IGNORE_MERGES
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
