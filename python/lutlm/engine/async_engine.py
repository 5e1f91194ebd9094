"""The engine in its own thread, for asyncio callers (the HTTP server).

The engine thread owns the LLMEngine: it alone adds, aborts and steps, so no lock is
held while a step runs (the kernels release the GIL; the event loop stays responsive).
Callers queue commands and read their request's events from an asyncio.Queue:

    StepOutput ...  one per step that touched one of the request's sequences
    Request         the finished request (all sequences), no longer touched by the engine
    Exception       the request was refused (ValueError) or the step failed

Aborting a request that is running frees its blocks before the next step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lutlm.engine.engine import LLMEngine
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
        self._commands: list[tuple] = []
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
        self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str
    ) -> asyncio.Queue:
        """Queue a request; its events arrive on the returned queue."""
        queue: asyncio.Queue = asyncio.Queue()
        self._command(
            ("add", request_id, list(prompt_ids), params, asyncio.get_running_loop(), queue)
        )
        return queue

    def abort(self, request_id: str) -> None:
        self._command(("abort", request_id))

    def _command(self, cmd: tuple) -> None:
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
            done = set()
            for out in outputs:
                self._send(out.request_id, out)
                if out.finished:
                    done.add(out.request_id)
            for rid in done:
                req = eng.requests.get(rid)
                if req is not None and all(s.finished for s in req.sequences):
                    eng.requests.pop(rid)
                    self._send(rid, req)
                    self._streams.pop(rid, None)
            self._report()

    def _apply(self, cmd: tuple) -> None:
        if cmd[0] == "abort":
            self.engine.abort(cmd[1])
            self._streams.pop(cmd[1], None)
            return
        _, rid, prompt_ids, params, loop, queue = cmd
        try:
            self.engine.add_request(prompt_ids, params, rid)
        except ValueError as e:
            loop.call_soon_threadsafe(queue.put_nowait, e)
            return
        self._streams[rid] = (loop, queue)

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
