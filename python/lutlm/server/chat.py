"""POST /v1/chat/completions: a conversation through the model's chat template, n
answers, logprobs, streamed or not."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lutlm.engine.outputs import RequestOutput, StepOutput
from lutlm.server import generation as gen
from lutlm.server.protocol import APIError, ChatCompletionRequest
from lutlm.server.state import ServerState
from lutlm.server.streaming import event_stream, sse

router = APIRouter()

# The engine names the prompt "prompt"; a chat request's prompt is its messages.
_RENAME = {"prompt": "messages"}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state: ServerState = request.app.state.lutlm
    state.ready()
    state.check_model(body.model)
    gen.log_unknown_fields(body)
    gen.check_unsupported(body)
    gen.check_n(state, body.n)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError("top_logprobs needs logprobs=true", param="top_logprobs")
    text, prompt = await gen.chat_prompt(state, body.messages, body.add_generation_prompt)
    what = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(body, what)
    if max_tokens is None:
        max_tokens = max(0, state.max_model_len - len(prompt))
    elif max_tokens < 0:
        raise APIError(f"{what} must be at least 0, got {max_tokens}", param=what)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = gen.sampling_params(state, body, max_tokens, logprobs, None, body.n)
    gen.check_request(state, [prompt], params, {**_RENAME, "max_tokens": what})
    head = gen.response_head(state, "chatcmpl", "chat.completion")
    if body.stream:
        return event_stream(_stream(state, body, prompt, text, params, head, request))
    (final,) = await gen.finals(state, [prompt], params, head["id"], request, [text])
    choices = [
        {
            "index": o.index,
            "message": {"role": "assistant", "content": o.text},
            "logprobs": _logprobs(state, o.token_ids, o.logprobs or [])
            if logprobs is not None
            else None,
            "finish_reason": o.finish_reason,
        }
        for o in final.outputs
    ]
    return JSONResponse({**head, "choices": choices, "usage": _usage(final)})


def _logprobs(state: ServerState, ids: Sequence[int], lps: Sequence) -> dict:
    def entry(t: int, v: float) -> dict:
        text = state.token_text(t)
        return {"token": text, "logprob": v, "bytes": list(text.encode())}

    return {
        "content": [
            {**entry(t, lp), "top_logprobs": [entry(i, v) for i, v in top]}
            for t, (lp, top) in zip(ids, lps, strict=True)
        ]
    }


def _usage(final: RequestOutput) -> dict:
    completion = sum(len(o.token_ids) for o in final.outputs)
    return gen.usage(len(final.prompt_token_ids), completion, final.num_cached_tokens)


async def _stream(state, body, prompt, text, params, head, request):
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(index: int, delta: dict, lp: dict | None, finish: str | None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return sse({**head, "choices": [choice]})

    for j in range(body.n):
        yield chunk(j, {"role": "assistant", "content": ""}, None, None)
    final = None
    async for _, ev in gen.run(state, [prompt], params, head["id"], request, [text]):
        if isinstance(ev, RequestOutput):
            final = ev
            continue
        assert isinstance(ev, StepOutput)
        lp = None
        if params.logprobs is not None and ev.new_logprobs:
            lp = _logprobs(state, ev.new_token_ids, ev.new_logprobs)
        if ev.new_text or lp:
            yield chunk(ev.index, {"content": ev.new_text}, lp, None)
        if ev.finished:
            yield chunk(ev.index, {}, None, ev.finish_reason)
    if final is not None and body.stream_options and body.stream_options.include_usage:
        yield sse({**head, "choices": [], "usage": _usage(final)})
    yield sse("[DONE]")
