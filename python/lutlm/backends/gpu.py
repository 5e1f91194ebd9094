"""The decoder on a GPU: the CPU Decoder's weights repacked once for lutlm.kernels.

:class:`GpuDecoder` has the CPU :class:`~lutlm.model.decoder.Decoder`'s contract
(``config``, ``forward(batch, cache) -> float32 logits on the host``) plus ``new_cache``,
so the engine's scheduler and sampler run unchanged: the batch's metadata stays numpy,
is copied to the device once per step, and only the logits rows come back.

The layer sequence mirrors Decoder.forward step by step; the residual stream stays fp32
on the device, GEMM inputs are rounded to fp16 inside the kernels (see quant_gemm).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from lutlm import _C
from lutlm.kernels import (
    AttentionPlan,
    add_rms_norm,
    gated_act,
    interpreting,
    pack_quant,
    paged_attention,
    quant_matmul,
    rms_norm,
    rope,
    rope_cos_sin,
    write_kv,
)
from lutlm.kernels.quant_gemm import GEMV_MAX_M, GEMV_VARIANTS, QuantWeight
from lutlm.model.batch import ForwardBatch
from lutlm.model.config import ModelConfig
from lutlm.model.decoder import Decoder, LayerWeights
from lutlm.model.kv_cache import KVCache
from lutlm.model.linear import Linear
from lutlm.quant import Int4Weight, Int8Weight, TernaryWeight
from lutlm.quant._common import unpack_group_scales


def to_device(a: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A float32 copy of a host array on the device. Always a copy: the CPU model's arrays
    may be read-only memory maps, and on device "cpu" a view would alias them."""
    return torch.from_numpy(np.array(a, dtype=np.float32, order="C")).to(device)


class GpuKVCache:
    """fp16 K and V blocks of every layer on the device, in the CPU cache's layout
    [num_blocks, block_size, n_kv_heads, head_dim]."""

    def __init__(
        self, config: ModelConfig, num_blocks: int, block_size: int, device: torch.device
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}"
            )
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        self.num_blocks, self.block_size = num_blocks, block_size
        self.k = [
            torch.zeros(shape, dtype=torch.float16, device=device) for _ in range(config.num_layers)
        ]
        self.v = [
            torch.zeros(shape, dtype=torch.float16, device=device) for _ in range(config.num_layers)
        ]

    bytes_per_block = staticmethod(KVCache.bytes_per_block)

    def copy_block(self, src: int, dst: int) -> None:
        """Copy one block's K and V in every layer (copy-on-write of a shared block)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[dst].copy_(k[src])
            v[dst].copy_(v[src])


class GpuLinear:
    """A model Linear on the device: low-bit weights in the GPU layout (quant_gemm), f32
    weights as a dense fp32 matrix for torch.matmul."""

    def __init__(self, linear: Linear, device: torch.device, gemv: str = "auto") -> None:
        self.out_features, self.in_features = linear.out_features, linear.in_features
        if gemv not in ("auto", *GEMV_VARIANTS):
            raise ValueError(f"gemv must be 'auto' or one of {GEMV_VARIANTS}, got {gemv!r}")
        self.bias = None if linear.bias is None else to_device(linear.bias, device)
        self.weight: QuantWeight | torch.Tensor = repack(linear.weight, device)
        if isinstance(self.weight, QuantWeight) and self.weight.bits == 8 and gemv == "lut":
            gemv = "dequant"  # no LUT form for INT8 (a byte is one code: nothing to share)
        self.gemv = gemv

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.weight, QuantWeight):
            small = x.shape[0] <= GEMV_MAX_M
            y = quant_matmul(x, self.weight, kernel=self.gemv if small else "auto")
        else:
            y = x @ self.weight.T
        return y if self.bias is None else y + self.bias


def repack(weight: object, device: torch.device) -> QuantWeight | torch.Tensor:
    """A CPU packed weight (model.linear.PackedWeight) in its GPU form, values unchanged."""
    if isinstance(weight, np.ndarray):
        return to_device(weight, device)
    if isinstance(weight, Int4Weight):
        N, K = weight.shape
        codes = _C.unpack_int4(weight.codes, N, K, weight.group_size, weight.layout)
        d = unpack_group_scales(weight.d, N)
        m = None if weight.m is None else unpack_group_scales(weight.m, N)
        return pack_quant(codes, d, m, weight.group_size, "int4", device)
    if isinstance(weight, TernaryWeight):
        codes = (weight.values().astype(np.int16) + 1).astype(np.uint8)
        return pack_quant(codes, weight.scales, None, None, "ternary", device)
    if isinstance(weight, Int8Weight):
        codes = (weight.values().astype(np.int16) + 128).astype(np.uint8)
        d = unpack_group_scales(weight.d, weight.shape[0])
        return pack_quant(codes, d, None, weight.group_size, "int8", device)
    raise TypeError(f"no GPU form for weights of type {type(weight).__name__}")


class _Layer:
    def __init__(self, lw: LayerWeights, device: torch.device, gemv: str) -> None:
        def vec(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else to_device(a, device)

        self.attn_norm, self.ffn_norm = vec(lw.attn_norm), vec(lw.ffn_norm)
        self.attn_sub_norm, self.ffn_sub_norm = vec(lw.attn_sub_norm), vec(lw.ffn_sub_norm)
        self.qkv, self.o = GpuLinear(lw.qkv, device, gemv), GpuLinear(lw.o, device, gemv)
        self.gate_up = GpuLinear(lw.gate_up, device, gemv)
        self.down = GpuLinear(lw.down, device, gemv)


class GpuDecoder:
    """A loaded CPU Decoder's model on a GPU (or, for tests, on CPU tensors under
    TRITON_INTERPRET=1), with the same forward contract.

    Args:
        decoder: the model as model.loader.load_model built it; its weights are repacked
            once here (the CPU copy can be dropped afterwards).
        device: "cuda", "cuda:N", or "cpu" (Triton interpreter only).
        gemv: GEMV kernel for decode-sized batches: "auto" (quant_gemm.GEMV_DEFAULT),
            "dequant" or "lut" (for benchmarks).
    """

    def __init__(self, decoder: Decoder, device: str = "cuda", gemv: str = "auto") -> None:
        if device == "cpu" and not interpreting():
            raise RuntimeError(
                "GpuDecoder on device 'cpu' runs the Triton kernels in the interpreter: set "
                "TRITON_INTERPRET=1 before lutlm.kernels is imported (tests only; slow)"
            )
        self.device = torch.device(device)
        self.config = c = decoder.config
        self.embed = to_device(decoder.embed.weight, self.device)
        self.layers = [_Layer(lw, self.device, gemv) for lw in decoder.layers]
        self.final_norm = to_device(decoder.final_norm, self.device)
        self.lm_head = GpuLinear(decoder.lm_head, self.device, gemv)
        self.inv_freq = decoder.rope.inv_freq
        self.interleaved = decoder.rope.interleaved
        self.cos_sin = rope_cos_sin(self.inv_freq, c.max_position_embeddings, self.device)
        self.scale = c.head_dim**-0.5

    def new_cache(self, num_blocks: int, block_size: int = 16) -> GpuKVCache:
        """The KV cache on this model's device (what the engine passes to forward)."""
        return GpuKVCache(self.config, num_blocks, block_size, self.device)

    def _tensor(self, a: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype)).to(self.device)

    def forward(self, batch: ForwardBatch, cache: GpuKVCache) -> np.ndarray:
        """Logits [len(batch.logits_indices), vocab] (float32, on the host)."""
        if not isinstance(cache, GpuKVCache):
            raise TypeError(
                f"GpuDecoder.forward needs the cache from model.new_cache(), got "
                f"{type(cache).__name__}"
            )
        # Triton launches on torch's current device: make it this model's (cuda:N).
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with on_device, torch.inference_mode():
            return self._forward(batch, cache)

    def _forward(self, batch: ForwardBatch, cache: GpuKVCache) -> np.ndarray:
        c = self.config
        H, KV, eps = c.num_heads, c.num_kv_heads, c.rms_norm_eps
        T = len(batch.token_ids)
        if T and int(batch.positions.max()) >= self.cos_sin.shape[0]:
            # Positions past the config's context (the engine's max_model_len allows it).
            n = 2 * int(batch.positions.max()) + 1
            self.cos_sin = rope_cos_sin(self.inv_freq, n, self.device)
        ids = self._tensor(batch.token_ids, np.int64)
        pos = self._tensor(batch.positions, np.int64)
        slots = self._tensor(batch.slot_mapping, np.int32)
        tables = self._tensor(batch.block_tables, np.int32)
        ctx = self._tensor(batch.context_lens, np.int32)
        cu = self._tensor(batch.cu_seqlens_q, np.int32)
        plan = AttentionPlan.build(batch.cu_seqlens_q, batch.context_lens, self.device)

        h = self.embed[ids]  # the residual stream (a copy), updated in place
        x = rms_norm(h, self.layers[0].attn_norm, eps)
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(x)
            rope(qkv, pos, self.cos_sin, H + KV, c.head_dim, self.interleaved)  # q and k
            write_kv(qkv, slots, cache.k[i], cache.v[i], H)
            attn = paged_attention(
                qkv, cache.k[i], cache.v[i], tables, ctx, cu, self.scale, H, plan
            )
            if layer.attn_sub_norm is not None:
                attn = rms_norm(attn, layer.attn_sub_norm, eps)
            x = add_rms_norm(h, layer.o(attn), layer.ffn_norm, eps)
            act = gated_act(layer.gate_up(x), c.hidden_act == "relu2")
            if layer.ffn_sub_norm is not None:
                act = rms_norm(act, layer.ffn_sub_norm, eps)
            down = layer.down(act)
            if i + 1 < len(self.layers):
                x = add_rms_norm(h, down, self.layers[i + 1].attn_norm, eps)
            else:
                h += down
        if len(batch.logits_indices) == 0:  # only mid-prompt chunks this step
            return np.zeros((0, self.lm_head.out_features), np.float32)
        out = rms_norm(h[self._tensor(batch.logits_indices, np.int64)], self.final_norm, eps)
        return self.lm_head(out).cpu().numpy()
