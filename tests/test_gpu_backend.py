"""The GPU backend (lutlm.backends.gpu) end to end against the CPU backend.

Without a GPU the backend runs on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1,
set below before triton is imported); ``TRITON_INTERPRET=0`` on a GPU machine runs the
same tests compiled on the card (plus the full-size one).

Reference: the CPU Decoder in float32 over the very weight values the GPU packs (for
quantized models, each Linear's ``dequantize()``), so the only differences are the GPU's
fp16 rounding of GEMM inputs and of attention's Q and probabilities (K and V are fp16 in
both caches): at most 7e-4 of the logits' scale measured on these two-layer models
(interpreter, 2026-11-26). Bound: 5e-3.
"""

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .triton_assets import require_triton

require_triton()

import torch  # noqa: E402

import lutlm.backends as backends  # noqa: E402
from lutlm.backends import resolve_device  # noqa: E402
from lutlm.backends.gpu import GpuBackend, GpuKVCache, repack  # noqa: E402
from lutlm.kernels import interpreting, quant_matmul  # noqa: E402
from lutlm.model import ForwardBatch, KVCache, load_model  # noqa: E402
from lutlm.model.decoder import Decoder  # noqa: E402
from lutlm.quant import Linear, quantize_int4, quantize_int8, quantize_ternary  # noqa: E402

from .tiny_model import tiny_decoder  # noqa: E402

DEVICE = "cpu" if interpreting() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 but torch sees no CUDA GPU", allow_module_level=True)
TOL = 5e-3


# ---------------------------------------------------------------- device selection


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
        assert resolve_device("cuda") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_llm_device_cuda_fails_before_loading_without_a_gpu(tmp_path):
    from lutlm import LLM

    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):  # not FileNotFoundError
        LLM(tmp_path / "missing.gguf", device="cuda")


def test_resolve_device_without_triton(monkeypatch):
    monkeypatch.setattr(backends, "_gpu_stack_missing", lambda: ["triton"])
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match=r"needs triton.*lutlm\[gpu\]"):
        resolve_device("cuda")


# ---------------------------------------------------------------- weight repacking


def test_repack_keeps_every_cpu_weight_format():
    """Each CPU packed weight, repacked for the GPU, multiplies like its dequantize()."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 136)).astype(np.float32)  # ragged: 136 = 4 x 32 + 8
    x = rng.standard_normal((2, 136)).astype(np.float32)
    packed = [
        quantize_int4(w, 32, symmetric=True, layout="nibbles"),  # Q4_0 style
        quantize_int4(w, 64, symmetric=False, layout="planes"),  # Q4_1 style, group 64
        quantize_ternary(w, per_row=True),
        quantize_int8(w, 32),
    ]
    for p in packed:
        ref = x @ p.dequantize().T
        y = quant_matmul(torch.from_numpy(x).to(DEVICE), repack(p, DEVICE), kernel="dequant")
        np.testing.assert_allclose(y.cpu().numpy(), ref, rtol=1e-5, atol=1e-4, err_msg=str(p))
    with pytest.raises(TypeError, match="not a packed weight"):
        repack(object(), DEVICE)


# ---------------------------------------------------------------- decoder end to end


def dequantized(model: Decoder) -> Decoder:
    """The same model with every Linear as float32 (the values the GPU packs)."""

    def f32(lin: Linear) -> Linear:
        w = lin.weight
        return Linear(w if isinstance(w, np.ndarray) else w.dequantize(), lin.bias)

    layers = [
        dataclasses.replace(
            lw, qkv=f32(lw.qkv), o=f32(lw.o), gate_up=f32(lw.gate_up), down=f32(lw.down)
        )
        for lw in model.layers
    ]
    return Decoder(model.config, model.embed, layers, model.final_norm, f32(model.lm_head))


def quantized_tiny(fmt: str) -> Decoder:
    """tiny_decoder with its linears in a low-bit format (head INT8, as lutlm's default)."""
    m = tiny_decoder(1)

    def q(lin: Linear) -> Linear:
        if fmt == "int4":  # Q4_1 style: codes, scales and minimums
            return Linear(quantize_int4(lin.weight, 32, symmetric=False, layout="nibbles"))
        return Linear(quantize_ternary(lin.weight, per_row=True))

    layers = [
        dataclasses.replace(lw, qkv=q(lw.qkv), o=q(lw.o), gate_up=q(lw.gate_up), down=q(lw.down))
        for lw in m.layers
    ]
    head = Linear(quantize_int8(m.lm_head.weight, 32))
    return Decoder(m.config, m.embed, layers, m.final_norm, head)


def close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < TOL, err


def on_gpu(model: Decoder, gemv: str = "auto") -> Decoder:
    return model.on(GpuBackend(DEVICE, gemv=gemv))


def compare_steps(gpu_model: Decoder, ref: Decoder) -> None:
    """Two sequences over shuffled blocks: prefills (one in two chunks), then a mixed
    step (one decodes while the other prefills its second chunk), then decode of both."""
    bs, nb = 16, 12
    gcache, ccache = gpu_model.new_cache(nb, bs), KVCache(ref.config, nb, bs)
    rng = np.random.default_rng(5)
    vocab = ref.config.vocab_size
    a, b = rng.integers(0, vocab, 21).tolist(), rng.integers(0, vocab, 30).tolist()
    table_a, table_b = [7, 2, 10], [4, 11, 0]

    def both(batch: ForwardBatch) -> None:
        close(gpu_model.forward(batch, gcache), ref.forward(batch, ccache))

    both(ForwardBatch.single(a, 0, table_a, bs, all_logits=True))
    both(ForwardBatch.single(b[:13], 0, table_b, bs))  # first chunk of b
    # Mixed: a decodes token 21 while b prefills positions 13..29 (chunk over the prefix).
    toks = [5] + b[13:]
    pos = np.array([21, *range(13, 30)], np.int64)
    tables = np.array([table_a, table_b], np.int32)
    slots = np.array([tables[0 if i == 0 else 1, p // bs] * bs + p % bs for i, p in enumerate(pos)])
    mixed = ForwardBatch(
        token_ids=np.array(toks, np.int64),
        positions=pos,
        slot_mapping=slots.astype(np.int32),
        block_tables=tables,
        context_lens=np.array([22, 30], np.int32),
        cu_seqlens_q=np.array([0, 1, 18], np.int32),
        logits_indices=np.array([0, 17]),
    )
    both(mixed)
    decode = dataclasses.replace(
        mixed,
        token_ids=np.array([9, 3], np.int64),
        positions=np.array([22, 30], np.int64),
        slot_mapping=np.array([2 * bs + 6, 11 * bs + 14], np.int32),  # blocks 2 and 11
        context_lens=np.array([23, 31], np.int32),
        cu_seqlens_q=np.array([0, 1, 2], np.int32),
        logits_indices=np.array([0, 1]),
    )
    both(decode)
    empty = dataclasses.replace(decode, logits_indices=np.zeros(0, np.int64))
    assert gpu_model.forward(empty, gcache).shape == (0, vocab)


def test_f32_tiny_model_matches_cpu_decoder():
    cpu = tiny_decoder(0)
    compare_steps(on_gpu(cpu), cpu)


@pytest.mark.parametrize("fmt,gemv", [("int4", "lut"), ("ternary", "auto")])
def test_quantized_tiny_model_matches_cpu_decoder(fmt, gemv):
    model = quantized_tiny(fmt)  # INT8 head: "lut" falls back to dequant for it
    compare_steps(on_gpu(model, gemv), dequantized(model))


def test_hf_bitnet_and_qwen2_switches(tmp_path):
    """Family switches through the loader: BitNet (relu², sub-norms, ternary weights) and
    Qwen2 (q/k/v bias, tied INT8 head, INT4 weights), prefill then one decode step."""
    from .test_model_hf import make_checkpoint

    for case, weights in (("bitnet-float", "ternary"), ("qwen2-tied", "int4")):
        path = tmp_path / case
        make_checkpoint(path, case)
        model = load_model(path, weights=weights)
        ref, gpu = dequantized(model), on_gpu(model)
        gcache, ccache = gpu.new_cache(4, 16), KVCache(model.config, 4, 16)
        prompt = list(range(3, 22))
        for batch in (
            ForwardBatch.single(prompt, 0, [3, 1], 16, all_logits=True),
            ForwardBatch.single([40], len(prompt), [3, 1], 16),
        ):
            close(gpu.forward(batch, gcache), ref.forward(batch, ccache))


def test_cache_copy_block_and_wrong_cache_type():
    cpu = tiny_decoder(0)
    gpu = on_gpu(cpu)
    cache = gpu.new_cache(3, 16)
    assert isinstance(cache, GpuKVCache) and cache.k[0].device.type == torch.device(DEVICE).type
    cache.k[1][0].fill_(1.5)
    cache.v[1][0].fill_(-2.0)
    cache.copy_block(0, 2)
    assert bool((cache.k[1][2] == 1.5).all()) and bool((cache.v[1][2] == -2.0).all())
    assert GpuKVCache.bytes_per_block(cpu.config, 16) == KVCache.bytes_per_block(cpu.config, 16)
    with pytest.raises(TypeError, match="new_cache"):
        gpu.forward(ForwardBatch.single([1, 2], 0, [0], 16), KVCache(cpu.config, 3, 16))
    with pytest.raises(ValueError, match="only a CPU model can be placed"):
        gpu.on(GpuBackend(DEVICE))


def test_engine_greedy_tokens_match_cpu():
    """The unchanged scheduler and sampler over the GPU model: greedy tokens as on the
    CPU (the tiny model's sharp head keeps them far from ties)."""
    from lutlm.engine.engine import LLMEngine
    from lutlm.engine.sampling_params import SamplingParams

    prompts = [[5, 9, 17, 3, 44, 2, 8], list(range(10, 30))]
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    outs = []
    for model in (tiny_decoder(0), on_gpu(tiny_decoder(0))):
        engine = LLMEngine(model, [0], num_blocks=16)
        rids = [engine.add_request(p, params) for p in prompts]
        done = {}
        while engine.has_unfinished():
            engine.step()
            done.update((o.request_id, o) for o in engine.pop_finished())
        outs.append([done[r].token_ids for r in rids])
    assert outs[0] == outs[1]


@pytest.mark.skipif(DEVICE != "cuda", reason="full-size model: compiled, GPU only")
def test_smollm2_on_gpu_matches_cpu():
    from .model_assets import smollm2_path

    model = load_model(smollm2_path(), act_bits=16)
    ref, gpu = dequantized(model), model.on(GpuBackend("cuda"))
    prompt = [1, 504, 3458, 282, 4649, 314, 253, 1345, 281]
    gcache, ccache = gpu.new_cache(8, 16), KVCache(model.config, 8, 16)
    for batch in (
        ForwardBatch.single(prompt, 0, [6, 2], 16, all_logits=True),
        ForwardBatch.single([28], len(prompt), [6, 2], 16),
    ):
        g, c = gpu.forward(batch, gcache), ref.forward(batch, ccache)
        assert (g.argmax(-1) == c.argmax(-1)).mean() >= 0.9
        assert np.abs(g - c).max() / np.abs(c).max() < 2e-2


# ---------------------------------------------------------------- bench/gpu.py

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


def test_bench_gpu_cli_without_a_gpu():
    run = [sys.executable, str(BENCH)]
    assert "--sections" in subprocess.run([*run, "--help"], capture_output=True, text=True).stdout
    listed = subprocess.run([*run, "--list"], capture_output=True, text=True)
    assert (
        listed.returncode == 0 and "| llama2-7b | qkv | 12288 | 4096 | int4 | 1 |" in listed.stdout
    )
    if not torch.cuda.is_available():
        refused = subprocess.run(run, capture_output=True, text=True)
        assert refused.returncode != 0 and "needs a CUDA GPU" in refused.stderr


def test_bench_gpu_sections_run_on_the_interpreter(monkeypatch):
    """Every section's code path at toy shapes (a stub timer: the numbers mean nothing)."""
    if DEVICE != "cpu":
        pytest.skip("on a GPU, run bench/gpu.py itself")
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "SHAPES", {"toy": [("o", 40, 64)]})
    monkeypatch.setattr(bench, "ATTENTION", [(2, 40, 4, 2, 64)])
    monkeypatch.setattr(bench, "BATCHES", (1, 32))
    monkeypatch.setattr(bench, "E2E_BATCHES", (1,))
    monkeypatch.setattr(bench, "_ms", lambda fn: (fn(), 1.0)[1])
    gemv = bench.bench_gemv(100.0)
    assert len(gemv) == 2 * (3 + 1)  # formats x (batch 1: three kernels; 32: gemm)
    assert all(r["x fp16"] == 1.0 for r in gemv)
    assert len(bench.bench_attention(100.0)) == 1
    e2e = bench.bench_e2e(100.0, 2, [("tiny", tiny_decoder)])
    assert [(r["gemv"], r["batch"]) for r in e2e] == [("dequant", 1), ("lut", 1)]
