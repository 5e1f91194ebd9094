"""What every generating route shares: the checks run before a response starts, chat
prompts, and the stream of a request's engine events (with the disconnect watch and the
metrics).

Public, so that the OpenAI routes (completions.py, chat.py) and the task routes
(tasks_api.py) use the same path to the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from fastapi import Request

from lutlm.engine.errors import InvalidRequest
from lutlm.engine.outputs import RequestOutput, StepOutput
from lutlm.engine.sampling_params import SamplingParams
from lutlm.server.protocol import APIError
from lutlm.server.state import ServerState

Event = StepOutput | RequestOutput
log = logging.getLogger("lutlm.server")


def api_error(e: InvalidRequest, rename: dict[str, str] | None = None) -> APIError:
    """The OpenAI error for an engine refusal; `rename` maps the engine's parameter names
    to the route's (a chat's "prompt" is its "messages")."""
    param = (rename or {}).get(e.param or "", e.param)
    return APIError(str(e), param=param, code=e.code)


# Fields OpenAI clients send that have no effect here by design (no stored
# conversations, no tiers, no per-user tracking); they are not logged as unknown.
# (`user` is a declared field with no effect.)
NO_EFFECT_FIELDS = frozenset({"store", "metadata", "service_tier", "parallel_tool_calls"})
# A client chooses the field names: the log line quotes a bounded number of bounded names.
_LOGGED_FIELDS, _LOGGED_NAME_CHARS = 10, 64


def log_unknown_fields(body) -> None:
    """Log the request fields lutlm does not know, by name (they have no effect)."""
    extra = sorted(set(body.model_extra or ()) - NO_EFFECT_FIELDS)
    if extra:
        names = [repr(k[:_LOGGED_NAME_CHARS]) for k in extra[:_LOGGED_FIELDS]]
        more = f" and {len(extra) - _LOGGED_FIELDS} more" if len(extra) > _LOGGED_FIELDS else ""
        log.warning("ignoring unknown request fields: %s%s", ", ".join(names), more)


def check_unsupported(body) -> None:
    """Refuse what a chat request may ask for that lutlm cannot do yet, rather than answer
    with free text where the client expects a tool call or JSON."""
    fmt = body.response_format
    if fmt is not None and fmt.get("type") != "text":
        raise APIError(
            f"response_format of type {fmt.get('type')!r} is not supported: lutlm has no "
            "constrained decoding yet and would answer with free text",
            param="response_format",
        )
    if body.tools:
        raise APIError("tools are not supported yet (no tool-call parsing)", param="tools")
    if body.tool_choice not in (None, "none"):
        raise APIError(
            f"tool_choice {body.tool_choice!r} is not supported yet", param="tool_choice"
        )


def check_n(state: ServerState, n: int, param: str = "n") -> None:
    """n and best_of are capped (a request for 200,000 samples would hold the engine and
    the memory of every sequence's logits); checked before any other work."""
    limit = state.config.max_n
    if not 1 <= n <= limit:
        raise APIError(
            f"{param} must be between 1 and {limit} on this server, got {n} "
            "(lutlm serve --max-n raises the limit)",
            param=param,
        )


def check_request(
    state: ServerState,
    prompts: Sequence[list[int]],
    params: SamplingParams,
    rename: dict[str, str] | None = None,
) -> None:
    """The engine's own checks (context, KV capacity, token ids), run before a response
    starts: a streamed response must not send 200 and then an error event."""
    for ids in prompts:
        try:
            state.llm.engine.check_request(ids, params)
        except InvalidRequest as e:
            raise api_error(e, rename) from None


def sampling_params(state: ServerState, body, max_tokens: int, logprobs, prompt_logprobs, n: int):
    """The request's SamplingParams; a bad value is a 400 naming its parameter."""
    try:
        return body.sampling_params(
            max_tokens, logprobs, prompt_logprobs, n, state.config.prompt_lookup
        )
    except InvalidRequest as e:
        raise api_error(e) from None


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


async def chat_prompt(
    state: ServerState, messages, add_generation_prompt: bool = True
) -> tuple[str, list[int]]:
    """A conversation through the model's chat template: its text and token ids
    (rendered and tokenized in a worker thread)."""
    convo = []
    for i, m in enumerate(messages):
        msg = m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else dict(m)
        if isinstance(msg.get("content"), list):
            msg["content"] = _message_text(i, msg["content"])
        convo.append(msg)

    def render() -> tuple[str, list[int]]:
        text = state.tokenizer.apply_chat_template(
            convo, add_generation_prompt=add_generation_prompt
        )
        return text, state.tokenizer.encode(text, add_special_tokens=False)

    try:
        return await asyncio.to_thread(render)
    except ValueError as e:
        raise APIError(f"messages: {e}", param="messages") from None


async def _events(
    state: ServerState,
    prompt_ids: list[int],
    params: SamplingParams,
    rid: str,
    request: Request,
    prompt: str | None,
) -> AsyncIterator[Event]:
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
    queue = engine.submit(prompt_ids, params, rid, prompt)
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
            if isinstance(ev, InvalidRequest):
                done = True
                raise api_error(ev)
            if isinstance(ev, Exception):
                done = True
                raise APIError(f"generation failed: {ev}", 500, type="server_error")
            yield ev
            if isinstance(ev, RequestOutput):
                done = True
                return
    finally:
        state.in_flight -= 1
        if not done:
            engine.abort(rid)


async def run(
    state: ServerState,
    prompts: Sequence[list[int]],
    params: SamplingParams,
    base_id: str,
    request: Request,
    texts: Sequence[str | None] | None = None,
) -> AsyncIterator[tuple[int, Event]]:
    """Events of several prompts' requests, merged as they come: (prompt index, event).
    Each request ends with its RequestOutput; `texts` are the prompts' texts it carries."""
    merged: asyncio.Queue = asyncio.Queue()
    start = time.monotonic()
    metrics, name = state.metrics, state.model_name

    async def pump(i: int, ids: list[int]) -> None:
        first = True
        last: dict[int, float] = {}
        text = texts[i] if texts is not None else None
        try:
            async for ev in _events(state, ids, params, f"{base_id}-{i}", request, text):
                now = time.monotonic()
                if isinstance(ev, StepOutput) and ev.new_token_ids:
                    if first:
                        metrics.ttft.labels(name).observe(now - start)
                        first = False
                    if ev.index in last:
                        metrics.itl.labels(name).observe(now - last[ev.index])
                    last[ev.index] = now
                if isinstance(ev, RequestOutput):
                    metrics.e2e.labels(name).observe(now - start)
                    metrics.prompt_tokens.labels(name).inc(len(ev.prompt_token_ids))
                    for o in ev.outputs:
                        metrics.generation_tokens.labels(name).inc(len(o.token_ids))
                        metrics.requests.labels(name, o.finish_reason).inc()
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


async def finals(
    state: ServerState,
    prompts: Sequence[list[int]],
    params: SamplingParams,
    base_id: str,
    request: Request,
    texts: Sequence[str | None] | None = None,
) -> list[RequestOutput]:
    """The finished outputs of several prompts' requests, in prompt order."""
    done: dict[int, RequestOutput] = {}
    async for i, ev in run(state, prompts, params, base_id, request, texts):
        if isinstance(ev, RequestOutput):
            done[i] = ev
    return [done[i] for i in range(len(prompts))]


def response_head(state: ServerState, prefix: str, kind: str) -> dict:
    """The fields every response and chunk of one request starts with (a fresh id)."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": state.model_name,
    }


def usage(prompt_tokens: int, completion_tokens: int, cached: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
