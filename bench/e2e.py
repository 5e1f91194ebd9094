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
        engine = LLMEngine(model, [], num_blocks=(len(prompt) + decode) // 16 + 2)
        rid = engine.add_request(
            prompt, SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)
        )
        t0 = time.perf_counter()
        while not any(o.new_token_ids for o in engine.step()):  # the prompt, then token 1
            pass
        t1 = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        t2 = time.perf_counter()
        (out,) = engine.pop_finished()
        assert out.request_id == rid and len(out.token_ids) == decode + 1
        best_pre = max(best_pre, len(prompt) / (t1 - t0))
        best_dec = max(best_dec, decode / (t2 - t1))
    return best_pre, best_dec


def python_overhead(path, threads: int, prompt: list[int], decode: int) -> float:
    """Seconds per decode step of the same engine and decoder code with every matrix
    shrunk to nothing (same layer count and family switches, hidden size 32, f32
    weights, vocabulary 256): an upper bound on the Python (and call) overhead per
    token, since what is left of the kernels is counted too."""
    import dataclasses

    from lutlm.formats.gguf import GGUFModelFile
    from lutlm.model.decoder import Decoder, LayerWeights
    from lutlm.quant import Embedding, Linear

    _C.set_num_threads(threads)
    c = GGUFModelFile(path).config()
    kv = max(1, c.num_kv_heads * 4 // c.num_heads)
    c = dataclasses.replace(
        c,
        hidden_size=32,
        intermediate_size=32,
        num_heads=4,
        num_kv_heads=kv,
        head_dim=8,
        vocab_size=256,
    )
    rng = np.random.default_rng(0)

    def lin(n: int, k: int) -> Linear:
        return Linear((rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32))

    ones = np.ones(32, np.float32)
    layers = [
        LayerWeights(ones, lin(32 + 16 * kv, 32), lin(32, 32), ones, lin(64, 32), lin(32, 32))
        for _ in range(c.num_layers)
    ]
    emb = Embedding(rng.standard_normal((256, 32)).astype(np.float32))
    model = Decoder(c, emb, layers, ones, lin(256, 32))
    engine = LLMEngine(model, [], num_blocks=(len(prompt) + decode) // 16 + 2)
    engine.add_request(
        [t % 256 for t in prompt],
        SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True),
    )
    engine.step()
    t0 = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
    return (time.perf_counter() - t0) / decode


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
        # scores keeps n_batch rows: the whole prompt must fit in one batch.
        n_ctx=max(1024, len(prompt) + decode + 8),
        n_batch=max(1024, len(prompt) + decode + 8),
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
        help="also bound the Python overhead per decoded token",
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
    decode_rates = {}
    for th in (int(t) for t in args.threads.split(",")):
        pre, dec = bench_lutlm(path, th, prompt, args.decode, args.repeats, args.act_bits)
        decode_rates[th] = dec
        ref = bench_llamacpp(path, th, prompt, args.decode, args.repeats)
        rp, rd = (f"{ref[0]:.0f}", f"{ref[1]:.1f}") if ref else ("not installed", "-")
        ratio = f"{dec / ref[1]:.2f}x" if ref else "-"
        print(f"| {th} | {pre:.0f} | {rp} | {dec:.1f} | {rd} | {ratio} |", flush=True)
    if args.profile:
        for th, dec in decode_rates.items():
            over = python_overhead(path, th, prompt, args.decode)
            print(
                f"\n{th} thread(s): Python overhead at most {1e3 * over:.2f} ms per decoded "
                f"token = {100 * over * dec:.0f} % of lutlm's {1e3 / dec:.2f} ms (the same "
                "engine and decoder with matrices shrunk to nothing)"
            )


if __name__ == "__main__":
    main()
