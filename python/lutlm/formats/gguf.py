"""GGUF model files, read with the `gguf` package (memory-mapped, never copied whole)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, quants

from lutlm.model.config import FAMILIES, ModelConfig

# GGUF stores a matrix as ne = [K, N] (K contiguous); numpy rows are ne reversed.


@functools.lru_cache(maxsize=4)
def _reader(path: str, mtime_ns: int, size: int) -> GGUFReader:
    return GGUFReader(path, "r")


def open_gguf(path: Path) -> GGUFReader:
    """The file's GGUFReader. Parsing a large vocabulary's metadata takes the gguf package
    seconds, so the model loader and the tokenizer share one (keyed by path, size and
    modification time: a rewritten file is read again)."""
    st = path.stat()
    return _reader(str(path.resolve()), st.st_mtime_ns, st.st_size)


class GGUFModelFile:
    """A GGUF file's metadata and tensors.

    Args:
        path: the .gguf file.

    Raises:
        ValueError: the file is missing, truncated or not GGUF, naming the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such model file")
        try:
            self.reader = open_gguf(self.path)
        except Exception as e:  # the gguf package raises assorted errors on bad files
            raise ValueError(f"{self.path}: not a readable GGUF file ({e})") from e
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key: str, default: Any = None) -> Any:
        f = self.reader.fields.get(key)
        if f is None:
            return default
        value = f.contents()
        return value

    @property
    def architecture(self) -> str:
        return str(self.field("general.architecture", ""))

    def config(self) -> ModelConfig:
        """The decoder config from the llama-family metadata keys."""
        arch = self.architecture
        if arch not in FAMILIES:
            raise ValueError(
                f"{self.path}: unsupported architecture {arch!r}; supported: {', '.join(FAMILIES)}"
            )

        def need(key: str) -> Any:
            v = self.field(f"{arch}.{key}")
            if v is None:
                raise ValueError(f"{self.path}: metadata key {arch}.{key} is missing")
            return v

        n_heads = int(need("attention.head_count"))
        hidden = int(need("embedding_length"))
        vocab = self.field(f"{arch}.vocab_size")
        if vocab is None:
            vocab = len(self.reader.fields["tokenizer.ggml.tokens"].data)
        eos = self.field("tokenizer.ggml.eos_token_id")
        scaling = None
        if self.field(f"{arch}.rope.scaling.type") == "linear":
            scaling = {"rope_type": "linear", "factor": float(need("rope.scaling.factor"))}
        return ModelConfig.for_family(
            arch,
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(need("feed_forward_length")),
            num_layers=int(need("block_count")),
            num_heads=n_heads,
            num_kv_heads=int(self.field(f"{arch}.attention.head_count_kv", n_heads)),
            head_dim=int(self.field(f"{arch}.attention.key_length", hidden // n_heads)),
            rms_norm_eps=float(self.field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(self.field(f"{arch}.rope.freq_base", 10000.0)),
            max_position_embeddings=int(self.field(f"{arch}.context_length", 4096)),
            rope_scaling=scaling,
            tie_word_embeddings="output.weight" not in self.tensors,
            rope_interleaved=arch in ("llama", "mistral"),
            bos_token_id=self.field("tokenizer.ggml.bos_token_id"),
            eos_token_ids=[] if eos is None else [int(eos)],
        )

    def has(self, name: str) -> bool:
        return name in self.tensors

    def tensor(self, name: str) -> tuple[str, tuple[int, ...], np.ndarray]:
        """(ggml type name, numpy-order shape, raw data) of a tensor."""
        t = self.tensors.get(name)
        if t is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        shape = tuple(int(v) for v in reversed(t.shape.tolist()))
        return t.tensor_type.name, shape, t.data

    def float32(self, name: str) -> np.ndarray:
        """A tensor dequantized to float32 in numpy order."""
        kind, shape, data = self.tensor(name)
        qtype = GGMLQuantizationType[kind]
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            out = np.asarray(data, dtype=np.float32)
        else:
            try:
                out = quants.dequantize(data, qtype)
            except NotImplementedError as e:
                raise ValueError(f"{self.path}: tensor {name!r} has unsupported type {kind}") from e
        return out.reshape(shape).astype(np.float32, copy=False)
