"""The OpenAI-compatible HTTP server: FastAPI routes over an AsyncEngine.

The model loads in a background thread while the server already answers: /health is
503 until it is ready, then 200. Every error is a JSON body in OpenAI's shape with the
right status (400 bad parameter, 401 bad key, 404 unknown model or path, 405 wrong
method, 413 body too large, 503 loading or queue full), and every check runs before a
streamed response sends its first byte. A client that disconnects aborts its request,
streamed or not, which frees its KV blocks. Tokenizing and chat templating run in worker
threads, so a large request never holds up /health or other requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lutlm.engine.async_engine import AsyncEngine
from lutlm.engine.engine import StepOutput
from lutlm.engine.request import Request as EngineRequest
from lutlm.engine.sampling_params import SamplingParams
from lutlm.outputs import TextStream
from lutlm.server.metrics import Metrics
from lutlm.server.middleware import ApiKeyGuard, BodyGuard
from lutlm.server.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from lutlm.server.tasks_api import router as tasks_router

log = logging.getLogger("lutlm.server")


@dataclass
class ServerConfig:
    model: str | None = None  # a .gguf file or HF directory; None = the default model
    served_model_name: str | None = None
    api_key: str | None = None
    max_model_len: int | None = None
    kv_cache_memory_gb: float = 1.0
    max_num_seqs: int = 16
    max_waiting_requests: int = 256  # beyond this many requests in flight: 503
    max_n: int = 16  # the largest n / best_of a request may ask for
    max_request_bytes: int = 16 << 20  # larger bodies: 413
    expose_metrics: bool = False  # /metrics without the API key
    weights: str = "int4"
    head: str = "int8"
    act_bits: int = 16
    prompt_lookup: int = 0  # draft tokens for requests that don't say (0 = off)
    device: str = "cpu"  # cpu, cuda or auto (see LLM)
    # /v1/tasks/* may compile and run the C test programs a request carries (in the tool
    # sandbox of lutlm.tasks.sandbox): off unless asked for.
    allow_test_execution: bool = False
    allowed_origins: list[str] = field(default_factory=list)  # CORS off when empty


class _State:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.llm = None
        self.engine: AsyncEngine | None = None
        self.model_name = config.served_model_name or "lutlm-model"
        self.metrics: Metrics | None = None
        self.load_error: str | None = None
        self.in_flight = 0
        self.created = int(time.time())

    def load(self) -> None:
        """Load the model (in the background thread create_app starts when none was given)."""
        from lutlm.llm import LLM

        start = time.monotonic()
        try:
            llm = LLM(
                self.config.model,
                weights=self.config.weights,
                head=self.config.head,
                act_bits=self.config.act_bits,
                max_model_len=self.config.max_model_len,
                kv_cache_memory_gb=self.config.kv_cache_memory_gb,
                max_num_seqs=self.config.max_num_seqs,
                device=self.config.device,
            )
        except Exception as e:  # reported by /health and every endpoint
            log.exception("loading the model failed")
            self.load_error = f"loading the model failed: {e}"
            return
        self.attach(llm, time.monotonic() - start)

    def attach(self, llm, load_seconds: float | None = None) -> None:
        """Serve `llm`: start its engine thread; /health turns 200."""
        if self.config.served_model_name is None:
            self.model_name = Path(llm.model_path).name.removesuffix(".gguf")
        self.metrics = Metrics(self.model_name)
        engine = AsyncEngine(llm.engine, on_step=self.metrics.update)
        engine.start()
        self.llm, self.engine = llm, engine
        if load_seconds is not None:  # loaded here in the background (lutlm serve logs its own)
            log.info(
                "model %s loaded in %.1f s (%s); ready",
                self.model_name,
                load_seconds,
                llm.model_path,
            )

    def ready(self) -> AsyncEngine:
        if self.load_error:
            raise APIError(self.load_error, 500, type="server_error")
        if self.engine is None:
            raise APIError("the model is still loading", 503, type="service_unavailable")
        return self.engine

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.llm.engine.max_model_len

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                f"The model `{name}` does not exist (this server serves `{self.model_name}`).",
                404,
                param="model",
                code="model_not_found",
            )

    @lru_cache(maxsize=65536)  # noqa: B019 (one state per server, token strings never change)
    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)


def create_app(config: ServerConfig, llm=None) -> FastAPI:
    """The server's FastAPI app.

    Args:
        config: the server's options.
        llm: an already loaded `lutlm.LLM` to serve (what `lutlm serve` passes, so that a
            model that fails to load stops it before it binds); None loads config.model in
            a background thread while the server answers /health with 503.
    """
    state = _State(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if llm is not None:
            state.attach(llm)
        else:
            threading.Thread(target=state.load, name="lutlm-load", daemon=True).start()
        yield
        if state.engine is not None:
            state.engine.shutdown()

    for name in ("max_n", "max_request_bytes", "max_waiting_requests", "max_num_seqs"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    app = FastAPI(title="lutlm", lifespan=lifespan)
    app.state.lutlm = state
    app.include_router(tasks_router)  # /v1/tasks/* (lutlm.server.tasks_api)
    # Outermost last: CORS answers preflights before the key is asked for, and its headers
    # reach the 401s too, so a browser page can read them.
    app.add_middleware(BodyGuard, max_bytes=config.max_request_bytes)
    if config.api_key:
        open_paths = {"/health"} | ({"/metrics"} if config.expose_metrics else set())
        app.add_middleware(ApiKeyGuard, api_key=config.api_key, open_paths=frozenset(open_paths))
    if config.allowed_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.allowed_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )

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
        return {
            "object": "list",
            "data": [
                {
                    "id": state.model_name,
                    "object": "model",
                    "created": state.created,
                    "owned_by": "lutlm",
                    "max_model_len": state.max_model_len,
                }
            ],
        }

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        state.ready()
        state.check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError("give exactly one of prompt and messages", param="prompt")
        if body.messages is not None:
            ids = await _chat_prompt_ids(state, body.messages, body.add_generation_prompt)
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

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        state.ready()
        state.check_model(body.model)
        return await _completions(state, body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        state.ready()
        state.check_model(body.model)
        return await _chat(state, body, request)

    return app


# -- shared generation plumbing ---------------------------------------------------------


def _message_text(i: int, content: list) -> str:
    """The text of a message given as content parts; anything but text parts is a 400
    (this server runs text-only models: an image silently dropped would be answered as if
    it had been seen)."""
    texts = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise APIError(
                f"{where}: content parts of type {kind!r} are not supported; this model "
                "reads text only (send parts of type 'text')",
                param="messages",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise APIError(
                f"{where}.text must be a string, got {type(text).__name__}", param="messages"
            )
        texts.append(text)
    return "".join(texts)


async def _chat_prompt_ids(
    state: _State, messages, add_generation_prompt: bool = True
) -> list[int]:
    convo = []
    for i, m in enumerate(messages):
        msg = m.model_dump(exclude_none=True)
        if isinstance(msg.get("content"), list):
            msg["content"] = _message_text(i, msg["content"])
        convo.append(msg)

    def render() -> list[int]:
        text = state.tokenizer.apply_chat_template(
            convo, add_generation_prompt=add_generation_prompt
        )
        return state.tokenizer.encode(text, add_special_tokens=False)

    try:
        return await asyncio.to_thread(render)
    except ValueError as e:
        raise APIError(f"messages: {e}", param="messages") from None


def _check_context(state: _State, prompt_len: int, max_tokens: int, what: str) -> None:
    limit = state.max_model_len
    if prompt_len + max_tokens > limit:
        raise APIError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_len + max_tokens} tokens ({prompt_len} in the {what}, {max_tokens} for "
            "the completion). Please reduce the length of the prompt or the completion.",
            param="max_tokens" if prompt_len < limit else what,
            code="context_length_exceeded",
        )


def _check_n(state: _State, n: int, param: str = "n") -> None:
    """n and best_of are capped (a request for 200,000 samples would hold the engine and
    the memory of every sequence's logits); checked before any other work."""
    limit = state.config.max_n
    if not 1 <= n <= limit:
        raise APIError(
            f"{param} must be between 1 and {limit} on this server, got {n} "
            "(lutlm serve --max-n raises the limit)",
            param=param,
        )


def _check_request(state: _State, prompts: list[list[int]], params: SamplingParams) -> None:
    """The engine's own checks (context, KV capacity, token ids), run before a response
    starts: a streamed response must not send 200 and then an error event."""
    for ids in prompts:
        try:
            state.llm.engine.check_request(ids, params)
        except ValueError as e:
            raise APIError(str(e)) from None


def _params(
    state: _State, body, max_tokens: int, logprobs, prompt_logprobs, n: int
) -> SamplingParams:
    try:
        return body.sampling_params(
            max_tokens, logprobs, prompt_logprobs, n, state.config.prompt_lookup
        )
    except ValueError as e:  # SamplingParams' messages start with the parameter's name
        msg = str(e)
        raise APIError(msg, param=msg.split(" ", 1)[0].split("[", 1)[0]) from None


class _Seq:
    """Text, tokens and timing of one generated sequence."""

    def __init__(self, state: _State, prompt_ids: list[int], stop: list[str]) -> None:
        self.text = TextStream(state.tokenizer, prompt_ids, stop)
        self.ids: list[int] = []
        self.logprobs: list = []
        self.finish_reason: str | None = None
        self.last_time: float | None = None


async def _events(
    state: _State, prompt_ids: list[int], params: SamplingParams, rid: str, request: Request
) -> AsyncIterator[StepOutput | EngineRequest]:
    """A request's events until it finishes; aborts it if the caller goes away (checked
    twice a second whether or not events arrive, and raised as a 499 so a non-streamed
    caller's handler stops too)."""
    engine = state.ready()
    if state.in_flight >= state.config.max_waiting_requests:
        raise APIError(
            f"the server is busy ({state.in_flight} requests in flight); retry later",
            503,
            type="service_unavailable",
        )
    state.in_flight += 1
    queue = engine.submit(prompt_ids, params, rid)
    done = False
    checked = time.monotonic()
    try:
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), timeout=0.5)
            except TimeoutError:
                ev = None
            if ev is None or time.monotonic() - checked >= 0.5:
                checked = time.monotonic()
                if await request.is_disconnected():
                    raise APIError("the client closed the request", 499, type="cancelled")
            if ev is None:
                continue
            if isinstance(ev, ValueError):
                done = True
                raise APIError(str(ev))
            if isinstance(ev, Exception):
                done = True
                raise APIError(f"generation failed: {ev}", 500, type="server_error")
            yield ev
            if isinstance(ev, EngineRequest):
                done = True
                return
    finally:
        state.in_flight -= 1
        if not done:
            engine.abort(rid)


async def _run(
    state: _State,
    prompts: list[list[int]],
    params: SamplingParams,
    base_id: str,
    request: Request,
) -> AsyncIterator[tuple[int, StepOutput | EngineRequest]]:
    """Events of several prompts' requests, merged as they come: (prompt index, event)."""
    merged: asyncio.Queue = asyncio.Queue()
    start = time.monotonic()
    metrics = state.metrics

    async def pump(i: int, ids: list[int]) -> None:
        first = True
        last: dict[int, float] = {}
        try:
            async for ev in _events(state, ids, params, f"{base_id}-{i}", request):
                now = time.monotonic()
                if isinstance(ev, StepOutput) and ev.new_token_ids:
                    if first:
                        metrics.ttft.labels(state.model_name).observe(now - start)
                        first = False
                    if ev.index in last:
                        metrics.itl.labels(state.model_name).observe(now - last[ev.index])
                    last[ev.index] = now
                if isinstance(ev, EngineRequest):
                    metrics.e2e.labels(state.model_name).observe(now - start)
                    metrics.prompt_tokens.labels(state.model_name).inc(len(ev.prompt_ids))
                    for s in ev.sequences:
                        metrics.generation_tokens.labels(state.model_name).inc(len(s.output_ids))
                        metrics.requests.labels(state.model_name, s.finish_reason).inc()
                await merged.put((i, ev))
        except Exception as e:
            await merged.put((i, e))
        finally:
            await merged.put((i, None))

    tasks = [asyncio.create_task(pump(i, ids)) for i, ids in enumerate(prompts)]
    try:
        remaining = len(tasks)
        while remaining:
            i, ev = await merged.get()
            if ev is None:
                remaining -= 1
            elif isinstance(ev, Exception):
                raise ev
            else:
                yield i, ev
    finally:
        for t in tasks:  # a disconnect or error: the pumps' finally blocks abort
            t.cancel()


async def _guarded(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """A stream whose errors after the 200 status become an error event, then [DONE]."""
    try:
        async for c in chunks:
            yield c
    except APIError as e:
        yield _sse(e.body())
        yield _sse("[DONE]")


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int, cached: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


# -- /v1/completions ---------------------------------------------------------------------


async def _completion_prompts(state: _State, prompt) -> tuple[list[list[int]], list[str]]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError("prompt must not be empty", param="prompt")
    if isinstance(prompt[0], int):
        prompt = [prompt]
    ids, texts = [], []
    for p in prompt:
        if isinstance(p, str):
            ids.append(await asyncio.to_thread(state.tokenizer.encode, p))
            texts.append(p)
        else:
            vocab = state.llm.model.config.vocab_size
            bad = [t for t in p if not 0 <= t < vocab]
            if bad or not p:
                raise APIError(
                    f"prompt token id {bad[0]} is outside [0, {vocab})"
                    if bad
                    else "prompt must not be empty",
                    param="prompt",
                )
            ids.append(list(p))
            texts.append(
                await asyncio.to_thread(state.tokenizer.decode, p, skip_special_tokens=False)
            )
    return ids, texts


def _completion_logprobs(state: _State, ids: Sequence[int], lps: Sequence, offset: int) -> dict:
    tokens = [state.token_text(t) for t in ids]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [None if lp is None else lp[0] for lp in lps],
        "top_logprobs": [
            None if lp is None else {state.token_text(t): v for t, v in lp[1]} for lp in lps
        ],
        "text_offset": offsets,
    }


async def _completions(state: _State, body: CompletionRequest, request: Request) -> Response:
    if body.suffix:
        raise APIError("suffix is not supported", param="suffix")
    _check_n(state, body.n)
    if body.best_of is not None:
        _check_n(state, body.best_of, "best_of")
    prompts, texts = await _completion_prompts(state, body.prompt)
    longest = max(len(p) for p in prompts)
    max_tokens = state.max_model_len - longest if body.max_tokens is None else body.max_tokens
    for p in prompts:
        _check_context(state, len(p), max(max_tokens, 0), "prompt")
    n, best_of = body.n, body.best_of if body.best_of is not None else body.n
    if best_of < n:
        raise APIError(f"best_of ({best_of}) must be at least n ({n})", param="best_of")
    if body.stream and best_of > n:
        raise APIError("best_of > n cannot be streamed", param="best_of")
    want_lp = body.logprobs
    params = _params(
        state,
        body,
        max_tokens,
        want_lp if best_of == n else (want_lp or 0),
        want_lp if body.echo and want_lp is not None else None,
        best_of,
    )
    _check_request(state, prompts, params)
    cid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": state.model_name}
    if body.stream:
        return StreamingResponse(
            _guarded(_stream_completions(state, body, prompts, texts, params, head, request)),
            media_type="text/event-stream",
        )
    finals: dict[int, EngineRequest] = {}
    async for i, ev in _run(state, prompts, params, cid, request):
        if isinstance(ev, EngineRequest):
            finals[i] = ev
    choices, completion_tokens, cached = [], 0, 0
    for i in range(len(prompts)):
        req = finals[i]
        cached += max(0, req.num_cached_tokens)
        seqs = req.sequences
        completion_tokens += sum(len(s.output_ids) for s in seqs)
        if best_of > n:
            seqs = sorted(seqs, key=lambda s: -sum(lp for lp, _ in s.logprobs))[:n]
        for j, s in enumerate(seqs):
            stream = TextStream(state.tokenizer, s.prompt_ids, params.stop)
            stream.add(s.output_ids)
            stream.finish()
            text = (texts[i] if body.echo else "") + stream.text
            lp = None
            if want_lp is not None:
                ids, lps = list(s.output_ids), list(s.logprobs)
                if body.echo:
                    ids = req.prompt_ids + ids
                    lps = [None, *req.prompt_logprobs, *lps]
                lp = _completion_logprobs(state, ids, lps, 0)
            choices.append(
                {
                    "index": i * n + j,
                    "text": text,
                    "logprobs": lp,
                    "finish_reason": "stop" if stream.stopped else s.finish_reason,
                }
            )
    prompt_tokens = sum(len(p) for p in prompts)
    return JSONResponse(
        {**head, "choices": choices, "usage": _usage(prompt_tokens, completion_tokens, cached)}
    )


async def _stream_completions(state, body, prompts, texts, params, head, request):
    n = body.n
    seqs: dict[tuple[int, int], _Seq] = {}
    offsets: dict[tuple[int, int], int] = {}
    completion_tokens = cached = 0

    def chunk(index: int, text: str, lp: dict | None, finish: str | None) -> str:
        choice = {"index": index, "text": text, "logprobs": lp, "finish_reason": finish}
        return _sse({**head, "choices": [choice]})

    for i, t in enumerate(texts):
        if body.echo:
            for j in range(n):
                offsets[i, j] = len(t)
                yield chunk(i * n + j, t, None, None)
    async for i, ev in _run(state, prompts, params, head["id"], request):
        if isinstance(ev, EngineRequest):
            cached += max(0, ev.num_cached_tokens)
            completion_tokens += sum(len(s.output_ids) for s in ev.sequences)
            if body.echo and body.logprobs is not None:
                for j in range(n):  # the prompt's logprobs, now known
                    lps = [None, *ev.prompt_logprobs]
                    lp = _completion_logprobs(state, ev.prompt_ids, lps, 0)
                    yield chunk(i * n + j, "", lp, None)
            continue
        key = (i, ev.index)
        s = seqs.setdefault(key, _Seq(state, prompts[i], params.stop))
        delta = s.text.add(ev.new_token_ids)
        if ev.finished:
            delta += s.text.finish()
        lp = None
        if body.logprobs is not None and ev.new_logprobs:
            lp = _completion_logprobs(state, ev.new_token_ids, ev.new_logprobs, offsets.get(key, 0))
        offsets[key] = offsets.get(key, 0) + len(delta)
        finish = ("stop" if s.text.stopped else ev.finish_reason) if ev.finished else None
        if delta or lp or finish:
            yield chunk(i * n + ev.index, delta, lp, finish)
    if body.stream_options and body.stream_options.include_usage:
        prompt_tokens = sum(len(p) for p in prompts)
        yield _sse(
            {**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens, cached)}
        )
    yield _sse("[DONE]")


# -- /v1/chat/completions ----------------------------------------------------------------


def _chat_logprobs(state: _State, ids: Sequence[int], lps: Sequence) -> dict:
    def entry(t: int, v: float) -> dict:
        text = state.token_text(t)
        return {"token": text, "logprob": v, "bytes": list(text.encode())}

    return {
        "content": [
            {**entry(t, lp), "top_logprobs": [entry(i, v) for i, v in top]}
            for t, (lp, top) in zip(ids, lps, strict=True)
        ]
    }


async def _chat(state: _State, body: ChatCompletionRequest, request: Request) -> Response:
    _check_n(state, body.n)
    prompt = await _chat_prompt_ids(state, body.messages, body.add_generation_prompt)
    if body.max_completion_tokens is not None:
        max_tokens = body.max_completion_tokens
        what = "max_completion_tokens"
    else:
        max_tokens = body.max_tokens
        what = "max_tokens"
    if max_tokens is None:
        max_tokens = max(0, state.max_model_len - len(prompt))
    elif max_tokens < 0:
        raise APIError(f"{what} must be at least 0, got {max_tokens}", param=what)
    _check_context(state, len(prompt), max_tokens, "messages")
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError("top_logprobs needs logprobs=true", param="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = _params(state, body, max_tokens, logprobs, None, body.n)
    _check_request(state, [prompt], params)
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    head = {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_name,
    }
    if body.stream:
        return StreamingResponse(
            _guarded(_stream_chat(state, body, prompt, params, head, request)),
            media_type="text/event-stream",
        )
    final = None
    async for _, ev in _run(state, [prompt], params, cid, request):
        if isinstance(ev, EngineRequest):
            final = ev
    choices = []
    for s in final.sequences:
        stream = TextStream(state.tokenizer, prompt, params.stop)
        stream.add(s.output_ids)
        stream.finish()
        choices.append(
            {
                "index": s.index,
                "message": {"role": "assistant", "content": stream.text},
                "logprobs": _chat_logprobs(state, s.output_ids, s.logprobs)
                if logprobs is not None
                else None,
                "finish_reason": "stop" if stream.stopped else s.finish_reason,
            }
        )
    completion_tokens = sum(len(s.output_ids) for s in final.sequences)
    usage = _usage(len(prompt), completion_tokens, max(0, final.num_cached_tokens))
    return JSONResponse({**head, "choices": choices, "usage": usage})


async def _stream_chat(state, body, prompt, params, head, request):
    head = {**head, "object": "chat.completion.chunk"}
    seqs: dict[int, _Seq] = {}

    def chunk(index: int, delta: dict, lp: dict | None, finish: str | None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return _sse({**head, "choices": [choice]})

    for j in range(body.n):
        yield chunk(j, {"role": "assistant", "content": ""}, None, None)
    completion_tokens = cached = 0
    async for _, ev in _run(state, [prompt], params, head["id"], request):
        if isinstance(ev, EngineRequest):
            cached = max(0, ev.num_cached_tokens)
            completion_tokens = sum(len(s.output_ids) for s in ev.sequences)
            continue
        s = seqs.setdefault(ev.index, _Seq(state, prompt, params.stop))
        delta = s.text.add(ev.new_token_ids)
        if ev.finished:
            delta += s.text.finish()
        lp = None
        if params.logprobs is not None and ev.new_logprobs:
            lp = _chat_logprobs(state, ev.new_token_ids, ev.new_logprobs)
        if delta or lp:
            yield chunk(ev.index, {"content": delta}, lp, None)
        if ev.finished:
            yield chunk(ev.index, {}, None, "stop" if s.text.stopped else ev.finish_reason)
    if body.stream_options and body.stream_options.include_usage:
        yield _sse({**head, "choices": [], "usage": _usage(len(prompt), completion_tokens, cached)})
    yield _sse("[DONE]")
