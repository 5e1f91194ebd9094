#!/usr/bin/env python3
"""End-to-end prefill and decode speed on a GGUF model, lutlm and llama.cpp side by side.

    python bench/e2e.py [--model PATH] [--threads 1,2] [--prompt-tokens 128] [--decode 64]

lutlm runs through its engine (greedy, one request); llama.cpp through llama-cpp-python
(if installed) on the same file with the same thread count, in the same process run.
Decode tokens/s excludes the prefill; each figure is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shlex
import sys
import time

import numpy as np

import lutlm
from lutlm import _C
from lutlm.default_model import default_model_path
from lutlm.engine.engine import LLMEngine
from lutlm.engine.sampling_params import SamplingParams
from lutlm.model import load_model


def bench_lutlm(
    path, threads: int, prompt: list[int], decode: int, repeats: int, act_bits: int
) -> tuple[float, float]:
    _C.set_num_threads(threads)
    model = load_model(path, act_bits=act_bits)
    best_pre, best_dec = 0.0, 0.0
    for _ in range(repeats):
        engine = LLMEngine(model, [], num_blocks=64)
        rid = engine.add_request(
            prompt, SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)
        )
        t0 = time.perf_counter()
        engine.step()  # the whole prompt (<= 512 tokens) and the first token
        t1 = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        t2 = time.perf_counter()
        assert len(engine.requests[rid].output_ids) == decode + 1
        best_pre = max(best_pre, len(prompt) / (t1 - t0))
        best_dec = max(best_dec, decode / (t2 - t1))
    return best_pre, best_dec


NATIVE_CALLS = (
    "gemm_int4",
    "gemm_int8",
    "gemm_ternary",
    "gemm_f32",
    "paged_attention",
    "write_kv_cache",
    "rms_norm",
    "add_rms_norm",
    "rope",
    "gated_act",
)


def kernel_share(path, threads: int, prompt: list[int], decode: int, act_bits: int) -> float:
    """Fraction of decode time spent inside lutlm._C calls (cProfile; the rest is Python)."""
    import cProfile
    import pstats

    _C.set_num_threads(threads)
    engine = LLMEngine(load_model(path, act_bits=act_bits), [], num_blocks=64)
    engine.add_request(
        prompt, SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)
    )
    engine.step()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    while engine.has_unfinished():
        engine.step()
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    native = sum(
        v[2]
        for k, v in stats.items()
        if any(k[2] == f"<built-in method lutlm._C.{n}>" for n in NATIVE_CALLS)
    )
    return native / total


def bench_llamacpp(
    path, threads: int, prompt: list[int], decode: int, repeats: int
) -> tuple[float, float] | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path),
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=1024,
        n_batch=512,
        verbose=False,
    )
    best_pre, best_dec = 0.0, 0.0
    for _ in range(repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t2 = time.perf_counter()
        for _ in range(decode):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t3 = time.perf_counter()
        best_pre = max(best_pre, len(prompt) / (t1 - t0))
        best_dec = max(best_dec, decode / (t3 - t2))
    return best_pre, best_dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--act-bits", type=int, default=8, choices=(8, 16))
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also report the share of decode time inside native kernels",
    )
    args = ap.parse_args()
    path = args.model or default_model_path()
    rng = np.random.default_rng(0)
    prompt = [1] + rng.integers(100, 40000, size=args.prompt_tokens - 1).tolist()
    info = lutlm.cpu_info()
    print(f"- model: {path.name if hasattr(path, 'name') else path}")
    print(f"- cpu: {info['model']}, isa {info['isa']}; {platform.platform()}")
    print(f"- command: `python {shlex.join(sys.argv)}`")
    print(
        f"- prompt {args.prompt_tokens} tokens, decode {args.decode} tokens, greedy, "
        f"best of {args.repeats}; lutlm act_bits={args.act_bits}\n"
    )
    print(
        "| threads | lutlm prefill tok/s | llama.cpp prefill tok/s | lutlm decode tok/s "
        "| llama.cpp decode tok/s | decode lutlm/llama.cpp |"
    )
    print("|---|---|---|---|---|---|")
    for th in (int(t) for t in args.threads.split(",")):
        pre, dec = bench_lutlm(path, th, prompt, args.decode, args.repeats, args.act_bits)
        ref = bench_llamacpp(path, th, prompt, args.decode, args.repeats)
        rp, rd = (f"{ref[0]:.0f}", f"{ref[1]:.1f}") if ref else ("not installed", "-")
        ratio = f"{dec / ref[1]:.2f}x" if ref else "-"
        print(f"| {th} | {pre:.0f} | {rp} | {dec:.1f} | {rd} | {ratio} |", flush=True)
    if args.profile:
        for th in (int(t) for t in args.threads.split(",")):
            share = kernel_share(path, th, prompt, args.decode, args.act_bits)
            print(
                f"\n{th} thread(s): {share:.0%} of decode time in lutlm._C calls, "
                f"{1 - share:.0%} in Python (cProfile, which inflates the Python side)"
            )


if __name__ == "__main__":
    main()
