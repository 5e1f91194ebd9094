"""Sentencepiece vocabularies: `SpmVocab` (from GGUF `llama` metadata or a tokenizer.model,
read here straight from its protobuf bytes) and the `tokenizers` backend that encodes
like sentencepiece: pieces with scores, "▁" for a space, `<0xXX>` byte tokens for
characters outside the vocabulary; BPE vocabularies merge adjacent pieces best score
first, as llama.cpp does."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import Regex, decoders, models, normalizers

from lutlm.tokenizer.special_tokens import TokenType

SPACE = "\u2581"  # "▁": sentencepiece's spelling of a space


@dataclass(slots=True)
class SpmVocab:
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


def sentencepiece_backend(vocab: SpmVocab) -> tokenizers.Tokenizer:
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


def _merges_by_score(vocab: SpmVocab) -> list[tuple[str, str]]:
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


def read_sentencepiece_model(file: Path) -> SpmVocab:
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

    return SpmVocab(
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
