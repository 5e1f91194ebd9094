"""Shared helpers for the packed weight types."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lutlm import _C

METHODS = ("auto", "lut", "mad")
GROUP_SIZES = (32, 64, 128)

# The packed layouts' dimensions, exported once from csrc/quant_types.h by lutlm._C;
# tests/test_quant.py checks every format's declared shapes against what its packer
# produces.
TILE_ROWS = _C.TILE_ROWS  # output rows per tile (kTileRows)
K_ALIGN = _C.K_ALIGN  # K is padded to this, and to the group size (kKAlign)
STEP_BYTES = _C.STEP_BYTES  # bytes of one step of a tile (kStepBytes)
TERNARY_STEP_K = _C.TERNARY_STEP_K  # k values one ternary step covers (kTernaryStepK)
INT4_STEP_K = _C.INT4_STEP_K  # k values one INT4 step covers (kInt4StepK)


# A packed array's dtype and shape.
ArraySpec = tuple[type[np.generic], tuple[int, ...]]
# One GGUF tensor as formats/gguf.py gives it: (ggml type name, shape (N, K), raw bytes).
GGUFPart = tuple[str, tuple[int, ...], np.ndarray]


class GpuCodes(NamedTuple):
    """A weight as the GPU repack takes it (lutlm.kernels.pack_quant): unsigned codes and
    per-group scales, w = d * c + m (or d * (c - zero) without m)."""

    codes: np.ndarray  # uint8 [N, K]
    d: np.ndarray  # float [N, G] (ternary: one scale per row, [N])
    m: np.ndarray | None  # float [N, G] or None
    group_size: int | None  # None: one group per row (ternary)


def num_tiles(N: int) -> int:
    """Tiles of TILE_ROWS rows that hold N output rows."""
    return -(-N // TILE_ROWS)


def padded_k(K: int, group_size: int = K_ALIGN) -> int:
    """K padded to the kernels' alignment and to whole groups."""
    align = max(K_ALIGN, group_size)
    return -(-K // align) * align


def as_matrix(w: np.ndarray, name: str = "w") -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix [N, K], got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got dtype {w.dtype}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return w


def activations(x: np.ndarray, K: int) -> tuple[np.ndarray, bool]:
    """Return x as C-contiguous float32 [M, K] and whether it was a single vector."""
    x = np.asarray(x)
    vector = x.ndim == 1
    if vector:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != K:
        raise ValueError(f"x must have shape [M, {K}] or [{K}], got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32), vector


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def check_group_size(group_size: int) -> None:
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")


def num_groups(K: int, group_size: int) -> int:
    return -(-K // group_size)


def padded_groups(w: np.ndarray, group_size: int) -> np.ndarray:
    """w [N, K] as float32 [N, G, group_size], the last group zero padded."""
    N, K = w.shape
    padded = np.zeros((N, num_groups(K, group_size) * group_size), np.float32)
    padded[:, :K] = w
    return padded.reshape(N, -1, group_size)


def pack_group_scales(a: np.ndarray, N: int, K: int, group_size: int, name: str) -> np.ndarray:
    """Per-group fp16 values [N, G] in the kernels' layout [ceil(N/16), G, 16]."""
    a = np.asarray(a, dtype=np.float16)
    G = num_groups(K, group_size)
    if a.shape != (N, G):
        raise ValueError(f"{name} must have shape {(N, G)}, got {a.shape}")
    return _C.pack_group_scales(np.ascontiguousarray(a).view(np.uint16), K, group_size)


def unpack_group_scales(s: np.ndarray, N: int) -> np.ndarray:
    """The inverse of pack_group_scales, as float32 [N, G]."""
    G = s.shape[1]
    return s.view(np.float16).transpose(0, 2, 1).reshape(-1, G)[:N].astype(np.float32)


def gguf_block_rows(
    blocks: np.ndarray, shape: tuple[int, int], ggml_type: str, block_k: int, block_bytes: int
) -> np.ndarray:
    """A GGUF block-quantized tensor's raw bytes as [N, K / block_k, block_bytes], after
    checking that K is whole blocks and the byte count matches, naming the type."""
    N, K = shape
    if K % block_k:
        raise ValueError(f"{ggml_type} rows must be a multiple of {block_k} long, got K={K}")
    raw = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1)
    need = N * (K // block_k) * block_bytes
    if raw.size != need:
        raise ValueError(f"{ggml_type} tensor of shape {shape} needs {need} bytes, got {raw.size}")
    return raw.reshape(N, K // block_k, block_bytes)
