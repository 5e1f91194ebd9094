"""POST /v1/completions: prompts as text or token ids, n and best_of, echo, logprobs
(the prompt's too, the shape lm-evaluation-harness reads), streamed or not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lutlm.engine.outputs import RequestOutput, StepOutput
from lutlm.server import generation as gen
from lutlm.server.protocol import APIError, CompletionRequest
from lutlm.server.state import ServerState
from lutlm.server.streaming import event_stream, sse

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    state: ServerState = request.app.state.lutlm
    state.ready()
    state.check_model(body.model)
    gen.log_unknown_fields(body)
    if body.suffix:
        raise APIError("suffix is not supported", param="suffix")
    gen.check_n(state, body.n)
    if body.best_of is not None:
        gen.check_n(state, body.best_of, "best_of")
    n, best_of = body.n, body.best_of if body.best_of is not None else body.n
    if best_of < n:
        raise APIError(f"best_of ({best_of}) must be at least n ({n})", param="best_of")
    if body.stream and best_of > n:
        raise APIError("best_of > n cannot be streamed", param="best_of")
    prompts, texts = await _prompts(state, body.prompt)
    longest = max(len(p) for p in prompts)
    max_tokens = body.max_tokens
    if max_tokens is None:  # the rest of the context (a prompt past it fails the check)
        max_tokens = max(0, state.max_model_len - longest)
    want_lp = body.logprobs
    params = gen.sampling_params(
        state,
        body,
        max_tokens,
        want_lp if best_of == n else (want_lp or 0),  # best_of ranks by logprob
        want_lp if body.echo and want_lp is not None else None,
        best_of,
    )
    gen.check_request(state, prompts, params)
    texts = [  # token-id prompts as text, once the engine has checked the ids
        t if t is not None else await _decode(state, ids)
        for t, ids in zip(texts, prompts, strict=True)
    ]
    head = gen.response_head(state, "cmpl", "text_completion")
    if body.stream:
        return event_stream(_stream(state, body, prompts, texts, params, head, request))
    finals = await gen.finals(state, prompts, params, head["id"], request, texts)
    choices = []
    for i, final in enumerate(finals):
        outs = final.outputs
        if best_of > n:
            outs = sorted(outs, key=lambda o: -sum(lp for lp, _ in o.logprobs or []))[:n]
        for j, o in enumerate(outs):
            lp = None
            if want_lp is not None:
                ids, lps = list(o.token_ids), list(o.logprobs or [])
                if body.echo:
                    ids = final.prompt_token_ids + ids
                    lps = [None, *(final.prompt_logprobs or []), *lps]
                lp = _logprobs(state, ids, lps, 0)
            choices.append(
                {
                    "index": i * n + j,
                    "text": (texts[i] if body.echo else "") + o.text,
                    "logprobs": lp,
                    "finish_reason": o.finish_reason,
                }
            )
    return JSONResponse({**head, "choices": choices, "usage": _usage(prompts, finals)})


async def _decode(state: ServerState, ids: list[int]) -> str:
    return await asyncio.to_thread(state.tokenizer.decode, ids, skip_special_tokens=False)


async def _prompts(state: ServerState, prompt) -> tuple[list[list[int]], list[str | None]]:
    """Token ids of each prompt (text, a list of texts, ids, a list of ids), and the text
    of those given as text (None for ids: decoded once the engine has checked them)."""
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
            ids.append(list(p))
            texts.append(None)
    return ids, texts


def _logprobs(state: ServerState, ids: Sequence[int], lps: Sequence, offset: int) -> dict:
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


def _usage(prompts: list[list[int]], finals: Sequence[RequestOutput]) -> dict:
    completion = sum(len(o.token_ids) for f in finals for o in f.outputs)
    cached = sum(f.num_cached_tokens for f in finals)
    return gen.usage(sum(len(p) for p in prompts), completion, cached)


async def _stream(state, body, prompts, texts, params, head, request):
    n = body.n
    offsets: dict[tuple[int, int], int] = {}
    finals: list[RequestOutput] = []

    def chunk(index: int, text: str, lp: dict | None, finish: str | None) -> str:
        choice = {"index": index, "text": text, "logprobs": lp, "finish_reason": finish}
        return sse({**head, "choices": [choice]})

    if body.echo:
        for i, t in enumerate(texts):
            for j in range(n):
                offsets[i, j] = len(t)
                yield chunk(i * n + j, t, None, None)
    async for i, ev in gen.run(state, prompts, params, head["id"], request, texts):
        if isinstance(ev, RequestOutput):
            finals.append(ev)
            if body.echo and body.logprobs is not None:
                for j in range(n):  # the prompt's logprobs, now known
                    lps = [None, *(ev.prompt_logprobs or [])]
                    lp = _logprobs(state, ev.prompt_token_ids, lps, 0)
                    yield chunk(i * n + j, "", lp, None)
            continue
        assert isinstance(ev, StepOutput)
        key = (i, ev.index)
        lp = None
        if body.logprobs is not None and ev.new_logprobs:
            lp = _logprobs(state, ev.new_token_ids, ev.new_logprobs, offsets.get(key, 0))
        offsets[key] = offsets.get(key, 0) + len(ev.new_text)
        if ev.new_text or lp or ev.finished:
            yield chunk(i * n + ev.index, ev.new_text, lp, ev.finish_reason)
    if body.stream_options and body.stream_options.include_usage:
        yield sse({**head, "choices": [], "usage": _usage(prompts, finals)})
    yield sse("[DONE]")
