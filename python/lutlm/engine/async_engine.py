"""The engine in its own thread, for asyncio callers (the HTTP server).

The engine thread owns the LLMEngine: it alone adds, aborts and steps, so no lock is
held while a step runs (the kernels release the GIL; the event loop stays responsive).
Callers send typed commands (`AddRequest`, `AbortRequest`) and read their request's
events from an asyncio.Queue:

    StepOutput ...  one per step that touched one of the request's sequences
    RequestOutput   the finished request (all sequences); the last event
    Exception       the request was refused (InvalidRequest) or the step failed

Aborting a request that is running frees its blocks before the next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lutlm.engine.engine import LLMEngine
from lutlm.engine.errors import InvalidRequest
from lutlm.engine.sampling_params import SamplingParams


@dataclass(slots=True)
class EngineStats:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preemptions: int = 0
    draft_tokens: int = 0  # prompt-lookup drafts verified
    accepted_tokens: int = 0  # of which accepted


@dataclass(frozen=True, slots=True)
class AddRequest:
    """Queue a request; its events go to `queue` on `loop`."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """Drop a request and free its blocks."""

    request_id: str


Command = AddRequest | AbortRequest


class AsyncEngine:
    """Args:
    engine: the engine this thread will own.
    on_step: called in the engine thread after each step with fresh EngineStats.
    """

    def __init__(
        self, engine: LLMEngine, on_step: Callable[[EngineStats], None] | None = None
    ) -> None:
        self.engine = engine
        self.on_step = on_step
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._commands: list[Command] = []
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="lutlm-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        request_id: str,
        prompt: str | None = None,
    ) -> asyncio.Queue:
        """Queue a request; its events arrive on the returned queue."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._command(AddRequest(request_id, list(prompt_ids), params, loop, queue, prompt))
        return queue

    def abort(self, request_id: str) -> None:
        self._command(AbortRequest(request_id))

    def _command(self, cmd: Command) -> None:
        with self._lock:
            self._commands.append(cmd)
        self._wake.set()

    # -- engine thread ---------------------------------------------------------------

    def _loop(self) -> None:
        eng = self.engine
        while not self._stop:
            self._wake.clear()  # before taking commands: a later submit sets it again
            with self._lock:
                commands, self._commands = self._commands, []
            for cmd in commands:
                self._apply(cmd)
            if not eng.has_unfinished():
                self._report()
                self._wake.wait()
                continue
            try:
                outputs = eng.step()
            except Exception as e:  # a failed step fails the requests in it, not the server
                for rid in list(self._streams):
                    eng.abort(rid)
                    self._send(rid, e)
                    self._streams.pop(rid, None)
                continue
            for out in outputs:
                self._send(out.request_id, out)
            for final in eng.pop_finished():
                self._send(final.request_id, final)
                self._streams.pop(final.request_id, None)
            self._report()

    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, AbortRequest):
            self.engine.abort(cmd.request_id)
            self._streams.pop(cmd.request_id, None)
            return
        try:
            self.engine.add_request(cmd.prompt_ids, cmd.params, cmd.request_id, cmd.prompt)
        except InvalidRequest as e:
            cmd.loop.call_soon_threadsafe(cmd.queue.put_nowait, e)
            return
        self._streams[cmd.request_id] = (cmd.loop, cmd.queue)

    def _send(self, rid: str, event: object) -> None:
        stream = self._streams.get(rid)
        if stream is not None:
            loop, queue = stream
            loop.call_soon_threadsafe(queue.put_nowait, event)

    def _report(self) -> None:
        if self.on_step is None:
            return
        eng = self.engine
        self.on_step(
            EngineStats(
                running=len(eng.running),
                waiting=len(eng.waiting),
                kv_cache_usage=eng.blocks.usage,
                prefix_cache_queries=eng.blocks.queries,
                prefix_cache_hits=eng.blocks.hits,
                preemptions=eng.scheduler.num_preemptions,
                draft_tokens=eng.num_draft_tokens,
                accepted_tokens=eng.num_accepted_tokens,
            )
        )
