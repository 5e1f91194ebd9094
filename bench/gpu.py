#!/usr/bin/env python3
"""lutlm's Triton kernels on an NVIDIA GPU, against torch on the same card.

    python bench/gpu.py [--sections copy,gemv,attention,e2e] [--decode 64] [--out PATH]
    python bench/gpu.py --list    # the planned cases; needs no GPU

Sections (each prints a table; all of them go to --out as .md and .json, with the card's
name):

- copy: device-to-device copy bandwidth (read + write bytes / time), the roofline.
- gemv: INT4 (Q4_0, group 32) and ternary weights at Llama-2-7B and BitNet-b1.58-2B
  layer shapes, batch 1, 8 and 32: every applicable kernel (dequantize-in-registers GEMV,
  lookup-table GEMV, tl.dot GEMM) against torch fp16 F.linear on the same shape; effective
  bandwidth = bytes of packed weights and activations / time. Issue 7's targets: INT4 at
  batch 1 >= 3.5x fp16, ternary >= 5x, and >= 80 % of the copy bandwidth.
- attention: paged decode attention (block size 16, shuffled blocks, split-KV) against
  torch SDPA over contiguous K/V (GQA), bandwidth = K/V bytes read / time.
- e2e: decode tokens/s of a BitNet-2B-shaped ternary model (the TQ2_0 GGUF that
  bench/bitnet.py writes) and of SmolLM2-135M (lutlm's default model), through the engine,
  with each GEMV variant, against the roofline (copy bandwidth / bytes read per token).

The fastest GEMV variant measured here should become quant_gemm.GEMV_DEFAULT.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Where the sections run. Tests set "cpu" (Triton interpreter, tiny shapes, a stub timer)
# to exercise this file's code paths without a GPU; its numbers mean nothing there.
DEVICE = "cuda"

# Linear layers per decoder layer: (name, N, K).
SHAPES = {
    "llama2-7b": [
        ("qkv", 12288, 4096),
        ("o", 4096, 4096),
        ("gate_up", 22016, 4096),
        ("down", 4096, 11008),
    ],
    "bitnet-2b": [
        ("qkv", 3840, 2560),
        ("o", 2560, 2560),
        ("gate_up", 13824, 2560),
        ("down", 2560, 6912),
    ],
}
BATCHES = (1, 8, 32)
E2E_BATCHES = (1, 8)
FORMATS = ("int4", "ternary")
# (batch, context, heads, kv heads, head dim): Llama-3-8B-like GQA and BitNet-2B heads.
ATTENTION = [
    (b, ctx, h, kv, 128)
    for (h, kv) in ((32, 8), (20, 5))
    for b in (1, 8, 32)
    for ctx in (1024, 4096)
]


def gemv_kernels(batch: int) -> list[str]:
    """The kernels worth timing at a batch size: the per-row GEMVs only where they are
    candidates (quant_gemm.GEMV_MAX_M is 4; batch 8 shows where they stop paying)."""
    return ["dequant", "lut", "gemm"] if batch <= 8 else ["gemm"]


def gemv_cases() -> list[dict]:
    return [
        {"model": model, "layer": name, "N": N, "K": K, "fmt": fmt, "batch": b, "kernel": k}
        for model, layers in SHAPES.items()
        for name, N, K in layers
        for fmt in FORMATS
        for b in BATCHES
        for k in gemv_kernels(b)
    ]


def quant_bytes(N: int, K: int, fmt: str, group: int = 32) -> int:
    """Bytes of a packed weight in the GPU layout: INT4 4 bits + an fp16 scale per group,
    ternary 2 bits + one fp32 scale per row (kernels/quant_gemm.py)."""
    if fmt == "int4":
        return N * K // 2 + N * (-(-K // group)) * 2
    return N * (-(-K // 128) * 128) // 4 + N * 4


def attention_bytes(batch: int, ctx: int, kv: int, hd: int) -> int:
    """fp16 K and V read by one decode step of one layer."""
    return 2 * batch * ctx * kv * hd * 2


def markdown(rows: list[dict], cols: list[str]) -> str:
    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def require_cuda() -> None:
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as e:
        msg = f"bench/gpu.py needs torch and triton ({e}); pip install 'lutlm[gpu]'"
        raise SystemExit(msg) from e
    if not torch.cuda.is_available():
        raise SystemExit(
            f"bench/gpu.py needs a CUDA GPU; torch {torch.__version__} sees none "
            "(run it on a GPU machine; `--list` shows the planned cases without one)"
        )


# ---------------------------------------------------------------- GPU sections


def _ms(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def bench_copy() -> dict:
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    ms = _ms(lambda: dst.copy_(src))
    return {"bytes": 2 * n, "ms": ms, "GB/s": 2 * n / ms / 1e6}


def bench_gemv(copy_gbs: float) -> list[dict]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from lutlm.kernels import pack_quant, quant_matmul

    rng = np.random.default_rng(0)
    rows, packed, fp16 = [], {}, {}
    for c in gemv_cases():
        key = (c["N"], c["K"], c["fmt"])
        N, K, b = c["N"], c["K"], c["batch"]
        if key not in packed:
            top = 16 if c["fmt"] == "int4" else 3
            codes = rng.integers(0, top, (N, K), dtype=np.uint8)
            if c["fmt"] == "int4":
                d = (rng.random((N, K // 32)) * 0.01).astype(np.float32)
            else:
                d = np.full(N, 0.02, np.float32)
            packed[key] = pack_quant(codes, d, None, 32, c["fmt"], DEVICE)
        if (N, K) not in fp16:
            fp16[(N, K)] = torch.randn((N, K), dtype=torch.float16, device=DEVICE) * 0.02
        x = torch.randn((b, K), device=DEVICE)
        x16 = x.half()
        w, wf = packed[key], fp16[(N, K)]
        ms = _ms(lambda x=x, w=w, k=c["kernel"]: quant_matmul(x, w, kernel=k))
        ms_fp16 = _ms(lambda x16=x16, wf=wf: F.linear(x16, wf))
        nbytes = quant_bytes(N, K, c["fmt"]) + b * (K + N) * 4
        gbs = nbytes / ms / 1e6
        rows.append(
            {
                **c,
                "us": 1e3 * ms,
                "fp16 us": 1e3 * ms_fp16,
                "x fp16": ms_fp16 / ms,
                "GB/s": gbs,
                "% copy": 100 * gbs / copy_gbs,
            }
        )
    return rows


def bench_attention(copy_gbs: float) -> list[dict]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from lutlm.kernels import AttentionPlan, paged_attention

    rows = []
    rng = np.random.default_rng(1)
    for b, ctx, H, KV, hd in ATTENTION:
        bs = 16
        nblk = -(-ctx // bs)
        blocks = rng.permutation(b * nblk + 8)[: b * nblk].reshape(b, nblk).astype(np.int32)
        kc = torch.randn((b * nblk + 8, bs, KV, hd), dtype=torch.float16, device=DEVICE)
        vc = torch.randn_like(kc)
        q = torch.randn((b, (H + 2 * KV) * hd), device=DEVICE)
        cu = np.arange(b + 1, dtype=np.int32)
        ctx_np = np.full(b, ctx, np.int32)
        plan = AttentionPlan.build(cu, ctx_np, DEVICE)
        tables = torch.from_numpy(blocks).to(DEVICE)
        ctx_t, cu_t = torch.from_numpy(ctx_np).to(DEVICE), torch.from_numpy(cu).to(DEVICE)
        ms = _ms(partial(paged_attention, q, kc, vc, tables, ctx_t, cu_t, hd**-0.5, H, plan))
        # Reference: contiguous K/V [b, KV, ctx, hd], SDPA with GQA.
        kr = torch.randn((b, KV, ctx, hd), dtype=torch.float16, device=DEVICE)
        vr = torch.randn_like(kr)
        qr = torch.randn((b, H, 1, hd), dtype=torch.float16, device=DEVICE)
        ms_ref = _ms(partial(F.scaled_dot_product_attention, qr, kr, vr, enable_gqa=True))
        gbs = attention_bytes(b, ctx, KV, hd) / ms / 1e6
        rows.append(
            {
                "batch": b,
                "ctx": ctx,
                "heads": f"{H}/{KV}",
                "splits": plan.num_splits,
                "us": 1e3 * ms,
                "sdpa us": 1e3 * ms_ref,
                "x sdpa": ms_ref / ms,
                "GB/s": gbs,
                "% copy": 100 * gbs / copy_gbs,
            }
        )
    return rows


def gpu_weight_bytes(model) -> int:
    """Bytes a GPU model's decode step reads: packed linears, norms and the head."""
    import torch

    def nbytes(w) -> int:
        return int(w.numel() * w.element_size()) if isinstance(w, torch.Tensor) else w.nbytes

    total = nbytes(model.lm_head.weight) + nbytes(model.final_norm)
    for layer in model.layers:
        for lin in (layer.qkv, layer.o, layer.gate_up, layer.down):
            total += nbytes(lin.weight)
        for norm in (layer.attn_norm, layer.ffn_norm, layer.attn_sub_norm, layer.ffn_sub_norm):
            total += 0 if norm is None else nbytes(norm)
    return total


def decode_tok_s(model, prompt: list[int], decode: int, batch: int) -> float:
    """Best of two runs: the first also autotunes the kernels for the step's shapes."""
    import torch

    from lutlm.engine.engine import LLMEngine
    from lutlm.engine.sampling_params import SamplingParams

    best = 0.0
    for _ in range(2):
        blocks = batch * ((len(prompt) + decode) // 16 + 2)
        eng = LLMEngine(model, [], num_blocks=blocks, max_num_seqs=batch)
        params = SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)
        rids = [eng.add_request(prompt, params) for _ in range(batch)]
        started: set[str] = set()
        while len(started) < len(rids):  # every prompt prefilled, its first token out
            started |= {o.request_id for o in eng.step() if o.new_token_ids}
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        while eng.has_unfinished():
            eng.step()  # forward returns logits on the host: each step synchronizes
        best = max(best, batch * decode / (time.perf_counter() - t0))
    return best


def e2e_models(gguf: Path) -> list[tuple[str, Callable[[], object]]]:
    """(name, loader of the CPU Decoder) for the e2e section."""
    from lutlm.default_model import default_model_path
    from lutlm.model import load_model

    sys.path.insert(0, str(HERE))
    from bitnet import SHAPE, write_gguf  # the same model file as bench/bitnet.py

    def bitnet() -> object:
        meta = gguf.with_suffix(".json")
        if not (gguf.is_file() and meta.is_file() and json.loads(meta.read_text()) == SHAPE):
            print(f"writing {gguf} ...", flush=True)
            write_gguf(gguf, SHAPE)
            meta.write_text(json.dumps(SHAPE))
        return load_model(gguf)

    return [
        ("bitnet-2b-shape (TQ2_0)", bitnet),
        ("SmolLM2-135M (Q4_1)", lambda: load_model(default_model_path())),
    ]


def bench_e2e(copy_gbs: float, decode: int, models: list[tuple[str, Callable[[], object]]]):
    from lutlm.backends.gpu import GpuBackend

    rows = []
    for name, load in models:
        cpu = load()
        for gemv in ("dequant", "lut"):
            model = cpu.on(GpuBackend(DEVICE, gemv=gemv))
            per_token = gpu_weight_bytes(model)
            roof = copy_gbs * 1e9 / per_token
            for batch in E2E_BATCHES:
                tok_s = decode_tok_s(model, list(range(30, 46)), decode, batch)
                rows.append(
                    {
                        "model": name,
                        "gemv": gemv,
                        "batch": batch,
                        "tok/s": tok_s,
                        "MB/token": per_token / 1e6,
                        "roofline tok/s": roof,
                        "% roofline (batch 1)": 100 * tok_s / roof if batch == 1 else "",
                    }
                )
            del model
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="copy,gemv,attention,e2e")
    ap.add_argument("--decode", type=int, default=64, help="decode steps timed per e2e run")
    ap.add_argument("--gguf", type=Path, default=Path("/tmp/lutlm-bench-bitnet-2b.gguf"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu")
    ap.add_argument("--list", action="store_true", help="print the planned cases and exit")
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    bad = set(sections) - {"copy", "gemv", "attention", "e2e"}
    if bad:
        ap.error(f"unknown sections {sorted(bad)}")
    if args.list:
        cases = gemv_cases()
        print(f"gemv: {len(cases)} cases, e.g.")
        print(markdown(cases[:6], ["model", "layer", "N", "K", "fmt", "batch", "kernel"]))
        print(
            f"weight bytes (INT4 / ternary) of Llama-2-7B gate_up: "
            f"{quant_bytes(22016, 4096, 'int4') / 1e6:.1f} / "
            f"{quant_bytes(22016, 4096, 'ternary') / 1e6:.1f} MB"
        )
        att = [
            {
                "batch": b,
                "ctx": c,
                "heads": f"{h}/{kv}",
                "hd": hd,
                "KV MB": attention_bytes(b, c, kv, hd) / 1e6,
            }
            for b, c, h, kv, hd in ATTENTION
        ]
        print("attention:")
        print(markdown(att, ["batch", "ctx", "heads", "hd", "KV MB"]))
        return 0
    require_cuda()
    import torch

    card = torch.cuda.get_device_name()
    copy = bench_copy()
    lines = [
        f"# lutlm GPU kernels on {card}",
        "",
        f"Command: `python bench/gpu.py {shlex.join(sys.argv[1:] if argv is None else argv)}`; "
        f"torch {torch.__version__}, triton {__import__('triton').__version__}",
        "",
        f"Device-to-device copy: {copy['GB/s']:.0f} GB/s (read + write), the roofline below.",
    ]
    results: dict = {"card": card, "copy": copy}
    tables = {
        "gemv": (
            lambda: bench_gemv(copy["GB/s"]),
            [
                "model",
                "layer",
                "fmt",
                "batch",
                "kernel",
                "us",
                "fp16 us",
                "x fp16",
                "GB/s",
                "% copy",
            ],
        ),
        "attention": (
            lambda: bench_attention(copy["GB/s"]),
            ["batch", "ctx", "heads", "splits", "us", "sdpa us", "x sdpa", "GB/s", "% copy"],
        ),
        "e2e": (
            lambda: bench_e2e(copy["GB/s"], args.decode, e2e_models(args.gguf)),
            [
                "model",
                "gemv",
                "batch",
                "tok/s",
                "MB/token",
                "roofline tok/s",
                "% roofline (batch 1)",
            ],
        ),
    }
    for name in sections:
        if name == "copy":
            continue
        fn, cols = tables[name]
        print(f"{name} ...", flush=True)
        rows = fn()
        results[name] = rows
        lines += ["", f"## {name}", "", markdown(rows, cols)]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
