"""HTTP endpoints of the compiler tasks: POST /v1/tasks/optimize-ir, /v1/tasks/decompile and
/v1/tasks/transpile. Each answers with the task's result (the answer, the model's text and
the verification report) as JSON.

A task runs in a worker thread: the verifiers block on compilers and emulators, which must
not stall the event loop. Its generation requests go back to the loop and through the
server's async engine like any completion, so they batch with other traffic, count against
the in-flight limit and are aborted when the client goes away.

Test drivers travel in the body as C source texts and are written to a fresh temporary
directory here: a request never names a path on the server. A binary to decompile travels
base64-encoded. Every tool and test program runs in lutlm.tasks.sandbox (no network, no
files but its work directory and the toolchain, capped memory, time, file size and
processes), and input that would make a tool read a file is a 400 before any tool runs
(lutlm.tasks.untrusted). Running programs a request brings is still the operator's
choice: requests that carry tests are refused (403) unless the server was started with
--allow-test-execution.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lutlm.engine.errors import InvalidRequest
from lutlm.engine.outputs import RequestOutput
from lutlm.engine.sampling_params import SamplingParams
from lutlm.server import generation as gen
from lutlm.server.protocol import APIError
from lutlm.server.state import ServerState

router = APIRouter()

MAX_TESTS = 64
MAX_TIMEOUT = 300.0  # seconds per tool run a client may ask for


class _TaskRequest(BaseModel):
    # Unknown fields are refused: a misspelt "tests" must not silently mean "no tests".
    model_config = ConfigDict(strict=True, extra="forbid")

    model: str | None = None
    preset: str | None = None
    n: int = Field(1, ge=1)  # at most the server's --max-n (checked in _run_task)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    prompt_lookup: int | None = None
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT)


class OptimizeIRRequest(_TaskRequest):
    ir: str
    max_retries: int = Field(0, ge=0, le=8)


class DecompileRequest(_TaskRequest):
    asm: str | None = None  # the function's assembly text, or:
    binary: str | None = None  # an executable or object file, base64
    function: str | None = None
    tests: list[str] = Field(default_factory=list, max_length=MAX_TESTS)  # C driver sources


class TranspileRequest(_TaskRequest):
    asm: str
    target: Literal["aarch64", "armv5", "riscv64", "x86_64"]
    tests: list[str] = Field(default_factory=list, max_length=MAX_TESTS)
    c_code: str | None = None


class _EngineGenerator:
    """`LLM.generate` / `LLM.chat` for a task thread, served by the server's async engine."""

    def __init__(
        self, state: ServerState, loop: asyncio.AbstractEventLoop, request: Request
    ) -> None:
        self.state, self.loop, self.request = state, loop, request
        self.tokenizer = state.tokenizer

    def generate(self, prompts: list[str], params: SamplingParams) -> list[RequestOutput]:
        return [self._complete(p, self.tokenizer.encode(p), params) for p in prompts]

    def chat(self, messages: list[dict], params: SamplingParams) -> list[RequestOutput]:
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except ValueError as e:
            raise APIError(f"preset needs a chat template: {e}", param="preset") from None
        return [self._complete(text, self.tokenizer.encode(text, add_special_tokens=False), params)]

    def _complete(self, text: str, ids: list[int], params: SamplingParams) -> RequestOutput:
        gen.check_request(self.state, [ids], params)
        rid = f"task-{uuid.uuid4().hex}"
        finals = gen.finals(self.state, [ids], params, rid, self.request, [text])
        return asyncio.run_coroutine_threadsafe(finals, self.loop).result()[0]


def _preset(name: str | None, task: str, default: str) -> Any:
    from lutlm.tasks.presets import get_preset

    try:
        return get_preset(name or default, task)
    except ValueError as e:
        raise APIError(str(e), param="preset") from None


def _params(body: _TaskRequest, preset: Any) -> SamplingParams:
    temperature = body.temperature
    if temperature is None and body.n > 1:
        temperature = 1.0  # best-of-n needs different samples
    try:
        return preset.sampling_params(
            n=body.n,
            max_tokens=body.max_tokens,
            temperature=temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            seed=body.seed,
            prompt_lookup=body.prompt_lookup,
        )
    except InvalidRequest as e:
        raise gen.api_error(e) from None


def _write_tests(request: Request, directory: Path, sources: list[str]) -> list[str]:
    if sources and not request.app.state.lutlm.config.allow_test_execution:
        raise APIError(
            "this server does not run the test programs a request carries; start it with "
            "--allow-test-execution to allow it (they run in the tool sandbox)",
            403,
            type="permission_error",
            param="tests",
        )
    paths = []
    for i, src in enumerate(sources):
        path = directory / f"test_{i}.c"
        path.write_text(src, encoding="utf-8")
        paths.append(str(path))
    return paths


async def _run_task(request: Request, body: _TaskRequest, fn: Any, *args: Any, **kw: Any):
    state = request.app.state.lutlm
    state.ready()
    state.check_model(body.model)
    gen.check_n(state, body.n)
    generator = _EngineGenerator(state, asyncio.get_running_loop(), request)
    try:
        result = await asyncio.to_thread(fn, generator, *args, **kw)
    except APIError:
        raise
    except InvalidRequest as e:
        raise gen.api_error(e) from None
    except ValueError as e:  # bad input: unknown target, missing function, invalid syntax
        raise APIError(str(e)) from None
    return JSONResponse(result.to_dict())


@router.post("/v1/tasks/optimize-ir")
async def optimize_ir_endpoint(body: OptimizeIRRequest, request: Request) -> JSONResponse:
    from lutlm.tasks.optimize_ir import TASK, optimize_ir

    preset = _preset(body.preset, TASK, "llm-compiler")
    return await _run_task(
        request,
        body,
        optimize_ir,
        body.ir,
        preset=preset,
        n=body.n,
        max_retries=body.max_retries,
        params=_params(body, preset),
        timeout=body.timeout or 60.0,
    )


@router.post("/v1/tasks/decompile")
async def decompile_endpoint(body: DecompileRequest, request: Request) -> JSONResponse:
    from lutlm.tasks.decompile import TASK, decompile

    preset = _preset(body.preset, TASK, "llm4decompile")
    if (body.asm is None) == (body.binary is None):
        raise APIError("give exactly one of asm and binary", param="asm")
    params = _params(body, preset)
    with tempfile.TemporaryDirectory(prefix="lutlm-task-") as tmp:
        d = Path(tmp)
        source: dict[str, Any] = {"asm": body.asm}
        if body.binary is not None:
            if not body.function:
                raise APIError("decompiling a binary needs function", param="function")
            try:
                data = base64.b64decode(body.binary, validate=True)
            except (binascii.Error, ValueError):
                raise APIError("binary is not valid base64", param="binary") from None
            (d / "binary").write_bytes(data)
            source = {"binary": d / "binary", "function": body.function}
        return await _run_task(
            request,
            body,
            decompile,
            **source,
            tests=_write_tests(request, d, body.tests),
            preset=preset,
            n=body.n,
            params=params,
            timeout=body.timeout or 10.0,
        )


@router.post("/v1/tasks/transpile")
async def transpile_endpoint(body: TranspileRequest, request: Request) -> JSONResponse:
    from lutlm.tasks.transpile import TASK, transpile

    preset = _preset(body.preset, TASK, "crt")
    try:
        preset.target_name(body.target)
    except ValueError as e:
        raise APIError(str(e), param="target") from None
    params = _params(body, preset)
    with tempfile.TemporaryDirectory(prefix="lutlm-task-") as tmp:
        return await _run_task(
            request,
            body,
            transpile,
            body.asm,
            body.target,
            tests=_write_tests(request, Path(tmp), body.tests),
            preset=preset,
            c_code=body.c_code,
            n=body.n,
            params=params,
            timeout=body.timeout or 10.0,
        )
