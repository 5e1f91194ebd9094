#!/usr/bin/env python3
"""Decode speed of a BitNet-b1.58-2B-4T-shaped model with random ternary weights,
against the machine's memory-bandwidth roofline and llama.cpp on the same file.

    python bench/bitnet.py [--threads 2] [--decode 32] [--layers 30] [--gguf PATH]

The bench writes (once; reused while the shape matches) a GGUF file of the model's
shape: ternary linear weights as TQ2_0 (one scale per tensor, like BitNet's), the tied
embedding/head as Q8_0, BitNet's sub-norms, a placeholder SentencePiece vocabulary.
lutlm loads the TQ2_0 tensors as ternary weights exactly; llama.cpp (llama-cpp-python,
if installed) runs the same file. Decode is memory-bound, so the roofline is
read bandwidth (lutlm's probe, same run, same threads) / bytes read per token.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

# microsoft/bitnet-b1.58-2B-4T (config.json)
SHAPE = dict(
    hidden=2560,
    intermediate=6912,
    layers=30,
    heads=20,
    kv_heads=5,
    vocab=128256,
    rope_theta=500000.0,
    rms_eps=1e-5,
    context=4096,
)


def tq2_0_blocks(t: np.ndarray, scale: float) -> np.ndarray:
    """Ternary values t int8 [N, K] (K % 256 == 0) times `scale` as GGUF TQ2_0 bytes:
    per 256 weights, 64 bytes of 2-bit codes (t + 1; byte j of each 32-byte half holds
    weights j, j+32, j+64, j+96 of its 128) and the fp16 scale."""
    n, k = t.shape
    q = (t + 1).astype(np.uint8).reshape(n * k // 256, 2, 4, 32)
    qs = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    d = np.full((qs.shape[0], 1), scale, np.float16).view(np.uint8)
    return np.concatenate([qs.reshape(-1, 64), d], axis=1).reshape(n, -1)


def q8_0_blocks(q: np.ndarray, scale: float) -> np.ndarray:
    """int8 values q [N, K] times `scale` as GGUF Q8_0 bytes (fp16 d, 32 int8)."""
    n, k = q.shape
    d = np.full((n * k // 32, 1), scale, np.float16).view(np.uint8)
    return np.concatenate([d, q.reshape(-1, 32).view(np.uint8)], axis=1).reshape(n, -1)


def write_gguf(path: Path, s: dict, seed: int = 0) -> None:
    import gguf

    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "bitnet")
    D, F, H, KV = s["hidden"], s["intermediate"], s["heads"], s["kv_heads"]
    hd = D // H
    w.add_context_length(s["context"])
    w.add_embedding_length(D)
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(s["rms_eps"])
    w.add_rope_freq_base(s["rope_theta"])
    w.add_vocab_size(s["vocab"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
    # Placeholder SentencePiece vocabulary: control tokens, the 256 byte tokens, pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581t{i}" for i in range(s["vocab"] - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (s["vocab"] - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(s["vocab"] - 259)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def ternary(name: str, n: int, k: int) -> None:
        t = rng.integers(-1, 2, size=(n, k), dtype=np.int8)
        w.add_tensor(name, tq2_0_blocks(t, 0.02), raw_dtype=T.TQ2_0)

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    emb = rng.integers(-127, 128, size=(s["vocab"], D), dtype=np.int8)
    w.add_tensor("token_embd.weight", q8_0_blocks(emb, 0.002), raw_dtype=T.Q8_0)
    del emb
    norm("output_norm.weight", D)
    for i in range(s["layers"]):
        b = f"blk.{i}."
        norm(b + "attn_norm.weight", D)
        ternary(b + "attn_q.weight", H * hd, D)
        ternary(b + "attn_k.weight", KV * hd, D)
        ternary(b + "attn_v.weight", KV * hd, D)
        norm(b + "attn_sub_norm.weight", H * hd)
        ternary(b + "attn_output.weight", D, H * hd)
        norm(b + "ffn_norm.weight", D)
        ternary(b + "ffn_gate.weight", F, D)
        ternary(b + "ffn_up.weight", F, D)
        norm(b + "ffn_sub_norm.weight", F)
        ternary(b + "ffn_down.weight", D, F)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def weight_bytes(model) -> int:
    """Bytes a decode step reads: every layer's weights, the final norm and the head."""
    total = model.lm_head.nbytes + model.final_norm.nbytes
    for layer in model.layers:
        for name in ("qkv", "o", "gate_up", "down"):
            total += getattr(layer, name).nbytes
        for norm in (layer.attn_norm, layer.ffn_norm, layer.attn_sub_norm, layer.ffn_sub_norm):
            total += 0 if norm is None else norm.nbytes
    return int(total)


def bench_lutlm(path: Path, threads: int, prompt: list[int], decode: int) -> dict:
    from lutlm import _C
    from lutlm.engine.engine import LLMEngine
    from lutlm.engine.sampling_params import SamplingParams
    from lutlm.model import load_model

    _C.set_num_threads(threads)
    t0 = time.perf_counter()
    model = load_model(path, act_bits=8)
    load_s = time.perf_counter() - t0
    kinds = {type(getattr(model.layers[0], n).weight).__name__ for n in ("qkv", "down")}
    best = 0.0
    for _ in range(2):
        eng = LLMEngine(model, [], num_blocks=(len(prompt) + decode) // 16 + 2)
        eng.add_request(
            prompt, SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)
        )
        while not any(o.new_token_ids for o in eng.step()):
            pass
        t1 = time.perf_counter()
        while eng.has_unfinished():
            eng.step()
        best = max(best, decode / (time.perf_counter() - t1))
    return {
        "tok_s": best,
        "bytes_per_token": weight_bytes(model),
        "load_s": load_s,
        "layer_weights": sorted(kinds),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--layers", type=int, default=SHAPE["layers"])
    ap.add_argument("--gguf", type=Path, default=Path("/tmp/lutlm-bench-bitnet-2b.gguf"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bitnet")
    args = ap.parse_args()
    from lutlm import _C

    shape = {**SHAPE, "layers": args.layers}
    meta = args.gguf.with_suffix(".json")
    if not (args.gguf.is_file() and meta.is_file() and json.loads(meta.read_text()) == shape):
        print(f"writing {args.gguf} ...", flush=True)
        write_gguf(args.gguf, shape)
        meta.write_text(json.dumps(shape))
    prompt = list(range(300, 308))
    _C.set_num_threads(args.threads)
    bw = max(_C.read_bandwidth(1 << 30, 3) for _ in range(3))
    ours = bench_lutlm(args.gguf, args.threads, prompt, args.decode)
    from e2e import bench_llamacpp  # the same llama.cpp timing loop as the SmolLM2 bench

    llama = bench_llamacpp(args.gguf, args.threads, prompt, args.decode, repeats=2)
    peer = {"tok_s": llama[1]} if llama else None
    roof = bw * 1e9 / ours["bytes_per_token"]
    lines = [
        f"Machine: {platform.machine()} {platform.processor()}; threads {args.threads}; "
        f"BitNet-b1.58-2B-4T shape with {args.layers} layers, random ternary weights "
        "(TQ2_0), Q8_0 tied head.",
        f"Command: `python bench/bitnet.py {shlex.join(sys.argv[1:])}`",
        "",
        f"- read bandwidth (probe, same run): {bw:.1f} GB/s",
        f"- lutlm bytes read per token: {ours['bytes_per_token'] / 1e6:.0f} MB "
        f"(layers as {', '.join(ours['layer_weights'])}); roofline {roof:.1f} tok/s",
        f"- lutlm decode: {ours['tok_s']:.1f} tok/s = {100 * ours['tok_s'] / roof:.0f} % of "
        f"roofline ({ours['tok_s'] * ours['bytes_per_token'] / 1e9:.1f} GB/s); "
        f"load {ours['load_s']:.1f} s",
    ]
    if peer:
        lines.append(
            f"- llama.cpp decode (same file): {peer['tok_s']:.1f} tok/s; "
            f"lutlm/llama.cpp = {ours['tok_s'] / peer['tok_s']:.2f}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {"bandwidth_gbps": bw, "lutlm": ours, "llama_cpp": peer, "shape": shape}, indent=2
        )
        + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
