"""Rotary position embeddings, with linear and llama3 frequency scaling."""

from __future__ import annotations

import math

import numpy as np

from lutlm.model.config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """inv_freq[i] = theta^(-2i/d), adjusted by the config's rope_scaling."""
    d = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        inv = inv / float(scaling["factor"])
    elif kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        smooth = (old_ctx / wavelen - low) / (high - low)
        scaled = np.where(wavelen > old_ctx / low, inv / factor, inv)
        mid = (wavelen <= old_ctx / low) & (wavelen >= old_ctx / high)
        inv = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


class Rope:
    """Applies RoPE to [T, heads, head_dim] arrays in place, given positions [T]."""

    def __init__(self, config: ModelConfig) -> None:
        self.interleaved = config.rope_interleaved
        self.inv_freq = inverse_frequencies(config)
        self._cos = np.zeros((0, len(self.inv_freq)), np.float32)
        self._sin = self._cos

    def _tables(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        need = int(positions.max()) + 1 if positions.size else 0
        if need > len(self._cos):
            n = max(need, 2 * len(self._cos), 256)
            ang = np.arange(n, dtype=np.float64)[:, None] * self.inv_freq[None, :]
            self._cos, self._sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        return self._cos[positions][:, None, :], self._sin[positions][:, None, :]

    def __call__(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        cos, sin = self._tables(positions)
        if self.interleaved:
            a, b = x[..., 0::2], x[..., 1::2]
        else:
            half = x.shape[-1] // 2
            a, b = x[..., :half], x[..., half:]
        ra = a * cos - b * sin
        rb = b * cos + a * sin
        out = np.empty_like(x)
        if self.interleaved:
            out[..., 0::2], out[..., 1::2] = ra, rb
        else:
            out[..., : ra.shape[-1]], out[..., ra.shape[-1] :] = ra, rb
        return out
