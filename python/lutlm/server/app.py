"""The OpenAI-compatible HTTP server: a FastAPI app over an AsyncEngine.

`create_app` wires the parts: the request guards (middleware.py), the routes
(completions.py, chat.py, tasks_api.py, the page at / in web_ui.py unless
config.web_ui is off, and the small ones here: health, metrics,
models, tokenize), and OpenAI's error shape for every error (400 bad parameter, 401 bad
key, 404 unknown model or path, 405 wrong method, 413 body too large, 503 loading or
queue full). The generating routes check everything before a streamed response sends its
first byte, tokenize and template in worker threads, and abort a request whose client
disconnects, streamed or not (generation.py).

Without a loaded `LLM`, the model loads in a background thread while the server already
answers: /health is 503 until it is ready, then 200.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from lutlm.server import chat, completions, tasks_api, web_ui
from lutlm.server.generation import chat_prompt
from lutlm.server.middleware import ApiKeyGuard, BodyGuard
from lutlm.server.protocol import APIError, DetokenizeRequest, TokenizeRequest
from lutlm.server.state import ServerConfig, ServerState

log = logging.getLogger("lutlm.server")


def create_app(config: ServerConfig, llm=None) -> FastAPI:
    """The server's FastAPI app.

    Args:
        config: the server's options.
        llm: an already loaded `lutlm.LLM` to serve (what `lutlm serve` passes, so that a
            model that fails to load stops it before it binds); None loads config.load in
            a background thread while the server answers /health with 503.
    """
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if llm is not None:
            state.attach(llm)
        else:
            threading.Thread(target=state.load, name="lutlm-load", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.shutdown()

    app = FastAPI(title="lutlm", lifespan=lifespan)
    app.state.lutlm = state
    for module in (completions, chat, tasks_api):
        app.include_router(module.router)
    if config.web_ui:
        app.include_router(web_ui.router)
    _add_middleware(app, config)
    _add_error_handlers(app)
    _add_small_routes(app, state)
    return app


def _add_middleware(app: FastAPI, config: ServerConfig) -> None:
    # Outermost last: CORS answers preflights before the key is asked for, and its headers
    # reach the 401s too, so a browser page can read them.
    app.add_middleware(BodyGuard, max_bytes=config.max_request_bytes)
    if config.api_key:
        open_paths = {"/health"} | ({"/metrics"} if config.expose_metrics else set())
        if config.web_ui:  # the page loads without the key, then asks for it
            open_paths |= set(web_ui.WEB_FILES)
        app.add_middleware(ApiKeyGuard, api_key=config.api_key, open_paths=frozenset(open_paths))
    if config.allowed_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.allowed_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            msg, code = f"no route {request.method} {request.url.path}", "not_found"
        elif e.status_code == 405:
            msg, code = f"{request.url.path} does not take {request.method}", "method_not_allowed"
        else:
            msg, code = str(e.detail), None
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        err = APIError(msg, e.status_code, type=kind, code=code)
        return JSONResponse(err.body(), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        err = APIError(f"internal error: {type(e).__name__}", 500, type="server_error")
        return JSONResponse(err.body(), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {}
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            msg, param = f"the request body is not valid JSON: {err.get('msg')}", None
        else:
            param = loc[0] if loc else None
            where = ".".join(loc) or "body"
            msg = f"{where}: {err.get('msg', 'invalid value')} (got {err.get('input')!r})"
        return JSONResponse(APIError(msg, 400, param=param).body(), status_code=400)


def _add_small_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> Response:
        if state.load_error:
            return JSONResponse({"status": "error", "error": state.load_error}, 500)
        if state.engine is None:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        body = state.metrics.render() if state.metrics else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> dict:
        state.ready()
        model = {
            "id": state.model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "lutlm",
            "max_model_len": state.max_model_len,
        }
        return {"object": "list", "data": [model]}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict:
        """The tokenizer's special tokens and chat template, in the shape clients that
        tokenize through the server read (lm-evaluation-harness's remote tokenizer: it
        then encodes the EOS text with /tokenize and renders the template itself)."""
        state.ready()
        tok = state.tokenizer
        named = tok.template_tokens

        def text(token_id: int | None) -> str | None:
            return None if token_id is None else tok.backend.id_to_token(token_id)

        eos_ids = sorted(tok.eos_token_ids)
        return {
            "tokenizer_class": "lutlm",
            "eos_token": named.get("eos_token") or (text(eos_ids[0]) if eos_ids else None),
            "bos_token": named.get("bos_token") or text(tok.bos_token_id),
            "pad_token": named.get("pad_token"),
            "chat_template": tok.chat_template,
            "model_max_length": state.max_model_len,
            "vocab_size": tok.vocab_size,
        }

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        state.ready()
        state.check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError("give exactly one of prompt and messages", param="prompt")
        if body.messages is not None:
            _, ids = await chat_prompt(state, body.messages, body.add_generation_prompt)
        else:
            ids = await asyncio.to_thread(
                state.tokenizer.encode, body.prompt, add_special_tokens=body.add_special_tokens
            )
        return {"tokens": ids, "count": len(ids), "max_model_len": state.max_model_len}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict:
        state.ready()
        state.check_model(body.model)
        vocab = state.tokenizer.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise APIError(f"token id {bad[0]} is outside [0, {vocab})", param="tokens")
        text = await asyncio.to_thread(
            state.tokenizer.decode, body.tokens, skip_special_tokens=False
        )
        return {"prompt": text}
