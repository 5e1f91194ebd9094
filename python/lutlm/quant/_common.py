"""Shared helpers for the packed weight types."""

from __future__ import annotations

import numpy as np

METHODS = ("auto", "lut", "mad")


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
