#!/usr/bin/env python3
"""Serving load: lutlm's server and llama-cpp-python's server on the same GGUF, same threads.

    python bench/serve.py [--model PATH] [--threads 2] [--concurrency 1,4,16]
                          [--max-tokens 64] [--requests-per-worker 4] [--servers lutlm,llama.cpp]
    python bench/serve.py --long-prompt 4000 [--trials 3] [--servers lutlm]

Each server runs as a subprocess on loopback; a pool of `concurrency` streaming clients
(the `openai` package) sends completion requests back to back. Every request generates
exactly --max-tokens tokens (EOS is banned with logit_bias, which both servers honour),
so output tokens/s is comparable. Reported per server and concurrency: requests/s,
output tokens/s, time to first token and inter-token latency (p50, p99; between
streamed chunks, one token each). Results go to bench/results/serve.{md,json}.

--long-prompt N measures head-of-line blocking instead: the time to first token of a
short request sent alone, and sent while an N-token prompt is being prefilled (each trial
with a fresh long prompt, so the prefix cache does not help), plus the long prompt's own
time to first token. Results go to bench/results/serve_long.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a compiler turns source code into machine code.",
    "List some facts about the planet Mars.",
    "Describe the water cycle to a ten year old.",
    "What makes a good unit test? Give examples.",
    "Summarize the history of the printing press.",
    "Give me a recipe for a simple tomato soup.",
    "How do lookup tables speed up low-bit matrix multiplication?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    server: str, model: Path, threads: int, port: int, max_seqs: int, max_model_len: int = 0
) -> subprocess.Popen:
    if server.startswith("lutlm"):  # "lutlm" (act_bits 16, the default) or "lutlm-act8"
        cmd = [
            sys.executable,
            "-m",
            "lutlm.cli",
            "serve",
            str(model),
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--max-num-seqs",
            str(max_seqs),
            "--served-model-name",
            "m",
            "--log-level",
            "warning",
            "--act-bits",
            "8" if server == "lutlm-act8" else "16",
        ]
        if max_model_len:
            cmd += ["--max-model-len", str(max_model_len), "--kv-cache-memory", "2"]
        ready = "/health"
    else:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--host",
            "127.0.0.1",
            "--n_ctx",
            str(max(4096, max_model_len)),
            "--model_alias",
            "m",
            "--interrupt_requests",  # by default a new request cuts off the streaming one
            "False",
        ]
        ready = "/v1/models"
    log = tempfile.TemporaryFile()  # a pipe nobody reads would fill and stall the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{server} exited: {log.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server} did not become ready")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


async def load(
    port: int, concurrency: int, per_worker: int, max_tokens: int, eos: list[int]
) -> dict:
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600
    )
    ttft, itl, counts = [], [], []

    async def one(prompt: str) -> None:
        t0 = time.perf_counter()
        last, n, finish, used = None, 0, None, None
        stream = await client.completions.create(
            model="m",
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0.8,
            stream=True,
            stream_options={"include_usage": True},
            logit_bias={str(e): -100 for e in eos},
        )
        async for ch in stream:
            if ch.usage is not None:
                used = ch.usage.completion_tokens
            if not ch.choices:
                continue
            now = time.perf_counter()
            if ch.choices[0].text:
                n += 1
                if last is None:
                    ttft.append(now - t0)
                else:
                    itl.append(now - last)
                last = now
            finish = ch.choices[0].finish_reason or finish
        # The usage chunk counts the tokens; without one (a server that ignores
        # stream_options), a chunk is one token, except where a token adds no text on its
        # own (part of a character), and a request cut short shows as far fewer chunks.
        short = used < max_tokens if used is not None else n < 0.9 * max_tokens
        if finish not in ("length", None) or short:
            got = used if used is not None else n
            raise RuntimeError(
                f"a request ended with {finish!r} after {got} of {max_tokens} tokens"
            )
        counts.append(n)

    async with client:
        return await _measure(one, concurrency, per_worker, max_tokens, ttft, itl, counts)


async def _measure(one, concurrency, per_worker, max_tokens, ttft, itl, counts) -> dict:
    async def worker(w: int) -> None:
        for i in range(per_worker):
            await one(PROMPTS[(w * per_worker + i) % len(PROMPTS)])

    await one(PROMPTS[0])  # warm-up, not counted
    ttft.clear(), itl.clear(), counts.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    nreq = concurrency * per_worker
    return {
        "concurrency": concurrency,
        "requests": nreq,
        "wall_s": wall,
        "requests_per_s": nreq / wall,
        "output_tokens_per_s": nreq * max_tokens / wall,
        "ttft_p50_ms": 1e3 * float(np.percentile(ttft, 50)),
        "ttft_p99_ms": 1e3 * float(np.percentile(ttft, 99)),
        "itl_p50_ms": 1e3 * float(np.percentile(itl, 50)),
        "itl_p99_ms": 1e3 * float(np.percentile(itl, 99)),
        "chunks_per_request": float(np.mean(counts)),
    }


async def head_of_line(port: int, long_prompts: list[str], trials: int) -> dict:
    """TTFT of a short request alone and behind a long prompt's prefill (seconds)."""
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=1200
    )

    async def ttft(prompt: str) -> float:
        t0 = time.perf_counter()
        stream = await client.completions.create(
            model="m", prompt=prompt, max_tokens=2, temperature=0, stream=True
        )
        first = None
        async for ch in stream:
            if first is None and ch.choices and ch.choices[0].text:
                first = time.perf_counter() - t0
        return first if first is not None else time.perf_counter() - t0

    async with client:
        await ttft(PROMPTS[0])  # warm-up
        alone = [await ttft(PROMPTS[i % len(PROMPTS)]) for i in range(5)]
        behind, long_ttft = [], []
        for i in range(trials):
            long_task = asyncio.create_task(ttft(long_prompts[i]))
            await asyncio.sleep(0.5)  # the long prefill is under way
            behind.append(await ttft(PROMPTS[(i + 1) % len(PROMPTS)]))
            long_ttft.append(await long_task)
    return {
        "short_alone_ms": 1e3 * float(np.median(alone)),
        "short_behind_long_ms": 1e3 * float(np.median(behind)),
        "short_behind_long_max_ms": 1e3 * max(behind),
        "long_ttft_ms": 1e3 * float(np.median(long_ttft)),
    }


def long_prompts(model: Path, tokens: int, count: int) -> list[str]:
    """`count` different prompts of about `tokens` tokens each."""
    from lutlm.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(model)
    text = " ".join(PROMPTS) + " "
    per = len(tok.encode(text, add_special_tokens=False))
    body = text * (tokens // per + 1)
    ids = tok.encode(body, add_special_tokens=False)[: tokens - 16]
    return [f"Document {i}:\n" + tok.decode(ids) for i in range(count)]


def main_long(args: argparse.Namespace, model: Path) -> int:
    prompts = long_prompts(model, args.long_prompt, args.trials)
    rows = []
    for server in args.servers.split(","):
        port = free_port()
        proc = start(server, model, args.threads, port, 4, args.long_prompt + 512)
        try:
            r = asyncio.run(head_of_line(port, prompts, args.trials))
        finally:
            stop(proc)
        r["server"] = server
        rows.append(r)
        print(json.dumps(r), flush=True)
    machine = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip()
    cmd = "python bench/serve.py " + shlex.join(sys.argv[1:])
    lines = [
        f"Machine: {machine}; model {model.name}; threads {args.threads}; a "
        f"{args.long_prompt}-token prompt, {args.trials} trials.",
        f"Command: `{cmd}`",
        "",
        "| server | short TTFT alone ms | short TTFT behind long prefill ms (max) "
        "| ratio | long prompt TTFT ms |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['short_alone_ms']:.0f} | {r['short_behind_long_ms']:.0f} "
            f"({r['short_behind_long_max_ms']:.0f}) | "
            f"{r['short_behind_long_ms'] / r['short_alone_ms']:.1f}x | {r['long_ttft_ms']:.0f} |"
        )
    out = args.out.with_name(args.out.name + "_long")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests-per-worker", type=int, default=4)
    ap.add_argument(
        "--servers", default="lutlm,lutlm-act8,llama.cpp", help="lutlm (act_bits 16), lutlm-act8"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve")
    ap.add_argument("--long-prompt", type=int, help="measure head-of-line blocking instead")
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    from lutlm.default_model import default_model_path
    from lutlm.tokenizer import Tokenizer

    model = args.model or default_model_path()
    if args.long_prompt:
        return main_long(args, model)
    eos = sorted(Tokenizer.from_gguf(model).eos_token_ids)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    for server in args.servers.split(","):
        port = free_port()
        proc = start(server, model, args.threads, port, max(levels))
        try:
            for c in levels:
                r = asyncio.run(load(port, c, args.requests_per_worker, args.max_tokens, eos))
                r["server"] = server
                rows.append(r)
                print(json.dumps(r), flush=True)
        finally:
            stop(proc)
    machine = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip()
    cmd = "python bench/serve.py " + shlex.join(sys.argv[1:])
    lines = [
        f"Machine: {machine}; model {model.name}; threads {args.threads}; "
        f"{args.max_tokens} tokens per request.",
        f"Command: `{cmd}`",
        "",
        "| server | conc. | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms "
        "| ITL p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['concurrency']} | {r['requests_per_s']:.2f} | "
            f"{r['output_tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | "
            f"{r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} |"
        )
    for server in {r["server"] for r in rows}:
        by = {r["concurrency"]: r for r in rows if r["server"] == server}
        if 1 in by and max(by) > 1:
            ratio = by[max(by)]["output_tokens_per_s"] / by[1]["output_tokens_per_s"]
            lines.append(
                f"\n{server}: output tokens/s at concurrency {max(by)} = {ratio:.2f}x concurrency 1"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
