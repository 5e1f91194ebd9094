"""GGUF model files, read with the `gguf` package (memory-mapped, never copied whole)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, quants

from lutlm.model_config import FAMILIES, ModelConfig, positive_int

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


def _config_keys(arch: str) -> dict[str, str]:
    """Returns: each ModelConfig field's GGUF metadata key for architecture `arch` (what
    GGUFModelFile.config_keys holds, before derived fields say how they were derived)."""
    return {
        "architecture": "general.architecture",
        "vocab_size": f"{arch}.vocab_size",
        "hidden_size": f"{arch}.embedding_length",
        "intermediate_size": f"{arch}.feed_forward_length",
        "num_layers": f"{arch}.block_count",
        "num_heads": f"{arch}.attention.head_count",
        "num_kv_heads": f"{arch}.attention.head_count_kv",
        "head_dim": f"{arch}.attention.key_length",
        "rms_norm_eps": f"{arch}.attention.layer_norm_rms_epsilon",
        "rope_theta": f"{arch}.rope.freq_base",
        "max_position_embeddings": f"{arch}.context_length",
        "rope_scaling": f"{arch}.rope.scaling",
        "bos_token_id": "tokenizer.ggml.bos_token_id",
        "eos_token_ids": "tokenizer.ggml.eos_token_id",
    }


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
        # ModelConfig field -> the metadata key it came from, once config() has run: the
        # loader's shape errors name the key.
        self.config_keys: dict[str, str] = {}

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
        """The decoder config from the llama-family metadata keys.

        Raises:
            ValueError: a missing key or a value the decoder cannot run with, naming the
                file and the key.
        """
        arch = self._family()
        keys = _config_keys(arch)
        # head_dim and the vocabulary are derived from other keys when absent, so those
        # must be valid before they are divided by or counted.
        n_heads = positive_int(
            self._need(arch, "attention.head_count"), f"{self.path}: {keys['num_heads']}"
        )
        hidden = positive_int(
            self._need(arch, "embedding_length"), f"{self.path}: {keys['hidden_size']}"
        )
        head_dim = self._head_dim(arch, keys, hidden, n_heads)
        vocab = self._vocab_size(keys)
        scaling = self._rope_scaling(arch)
        eos = self.field("tokenizer.ggml.eos_token_id")
        self.config_keys = keys
        return ModelConfig.from_file(
            str(self.path),
            keys,
            arch,
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=self._need(arch, "feed_forward_length"),
            num_layers=self._need(arch, "block_count"),
            num_heads=n_heads,
            num_kv_heads=self.field(keys["num_kv_heads"], n_heads),
            head_dim=head_dim,
            rms_norm_eps=self.field(keys["rms_norm_eps"], 1e-5),
            rope_theta=self.field(keys["rope_theta"], 10000.0),
            max_position_embeddings=self.field(keys["max_position_embeddings"], 4096),
            rope_scaling=scaling,
            tie_word_embeddings="output.weight" not in self.tensors,
            rope_interleaved=arch in ("llama", "mistral"),
            bos_token_id=self.field("tokenizer.ggml.bos_token_id"),
            eos_token_ids=[] if eos is None else [eos],
        )

    def _family(self) -> str:
        """Returns: general.architecture, checked to be one of the supported FAMILIES."""
        arch = self.architecture
        if arch not in FAMILIES:
            raise ValueError(
                f"{self.path}: general.architecture is {arch!r}; supported: {', '.join(FAMILIES)}"
            )
        return arch

    def _need(self, arch: str, key: str) -> Any:
        """Returns: the value of metadata key <arch>.<key>; a ValueError when it is missing."""
        v = self.field(f"{arch}.{key}")
        if v is None:
            raise ValueError(f"{self.path}: metadata key {arch}.{key} is missing")
        return v

    def _head_dim(self, arch: str, keys: dict[str, str], hidden: int, n_heads: int) -> int:
        """The attention head size: <arch>.attention.key_length, or hidden / n_heads when
        that is absent (then keys["head_dim"] says so).

        The decoder gives values and rotary embeddings the keys' head size, so a
        value_length or rope.dimension_count that differs is a ValueError.

        Returns:
            The head size, a positive int.
        """
        head_dim = self.field(keys["head_dim"])
        if head_dim is None:
            if hidden % n_heads:
                raise ValueError(
                    f"{self.path}: {keys['hidden_size']} ({hidden}) is not a multiple of "
                    f"{keys['num_heads']} ({n_heads}), and {keys['head_dim']} is not given"
                )
            head_dim = hidden // n_heads
            keys["head_dim"] = f"{keys['hidden_size']} / {keys['num_heads']}"
        head_dim = positive_int(head_dim, f"{self.path}: {keys['head_dim']}")
        for key in ("attention.value_length", "rope.dimension_count"):
            value = self.field(f"{arch}.{key}")
            if value is not None and value != head_dim:
                raise ValueError(
                    f"{self.path}: {arch}.{key} is {value!r}; only {head_dim} (the head size, "
                    f"{keys['head_dim']}) is supported"
                )
        return head_dim

    def _vocab_size(self, keys: dict[str, str]) -> Any:
        """The vocabulary size: <arch>.vocab_size, or the number of tokenizer.ggml.tokens
        when that is absent (then keys["vocab_size"] says so).

        Returns:
            The size as stored (ModelConfig checks it).
        """
        vocab = self.field(keys["vocab_size"])
        if vocab is None:
            tokens = self.reader.fields.get("tokenizer.ggml.tokens")
            if tokens is None:
                raise ValueError(
                    f"{self.path}: metadata key {keys['vocab_size']} is missing, and there is "
                    "no tokenizer.ggml.tokens to count"
                )
            vocab = len(tokens.data)
            keys["vocab_size"] = "the number of tokenizer.ggml.tokens"
        return vocab

    def _rope_scaling(self, arch: str) -> dict[str, Any] | None:
        """Returns: the HF-style rope_scaling dict for <arch>.rope.scaling.type "linear",
        None for no scaling; any other type is a ValueError."""
        scaling_type = self.field(f"{arch}.rope.scaling.type")
        if scaling_type == "linear":
            return {"rope_type": "linear", "factor": self._need(arch, "rope.scaling.factor")}
        if scaling_type not in (None, "none"):
            raise ValueError(
                f"{self.path}: {arch}.rope.scaling.type is {scaling_type!r}; supported: "
                "'none', 'linear'"
            )
        return None

    def has(self, name: str) -> bool:
        return name in self.tensors

    def file_of(self, name: str) -> Path:
        """The file that holds a tensor (this one; HFModelDir has shards)."""
        if name not in self.tensors:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        return self.path

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
