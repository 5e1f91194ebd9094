"""Server-sent events: the `data:` framing, and the guard that turns an error raised
after the 200 status (a client gone, a failed step) into a final error event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from lutlm.server.protocol import APIError


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def _guarded(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for c in chunks:
            yield c
    except APIError as e:
        yield sse(e.body())
        yield sse("[DONE]")


def event_stream(chunks: AsyncIterator[str]) -> StreamingResponse:
    """A text/event-stream response of `chunks` (already `sse`-framed)."""
    return StreamingResponse(_guarded(chunks), media_type="text/event-stream")
