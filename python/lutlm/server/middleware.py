"""What every request passes before a route sees it: the API key and the body's checks.

Both are plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which wraps the
receive channel and hides a client's disconnect from the routes that poll for it).

- `ApiKeyGuard`: with a key set, every path but /health (/metrics when the operator
  exposes it, and the page's static files, which hold no secret and then ask for the
  key) needs `Authorization: Bearer KEY`. CORS preflights never reach it: the
  CORS middleware sits outside and answers them itself, so browsers can use a keyed
  server cross-origin.
- `BodyGuard`: a body larger than the limit is a 413, refused from its Content-Length
  before it is read, or as soon as a chunked body passes the limit; a body that is not
  valid UTF-8, or whose JSON strings hold a lone UTF-16 surrogate (`"\\ud800"`, which
  `json` accepts but no tokenizer or response encoder can handle), is a 400. Everything
  else is passed on unchanged.

Both answer in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A \uD800-\uDFFF escape: only then can a valid UTF-8 body decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Above this, the body's checks run in a worker thread so /health keeps answering.
_OFF_LOOP_BYTES = 256 * 1024


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict:
    """The JSON body of an error, in OpenAI's shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def send_error(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class ApiKeyGuard:
    """Args:
    app: the application inside.
    api_key: the key every request but the open paths must carry.
    open_paths: paths served without the key (/health; /metrics when exposed; the web
        page's files).
    """

    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str]) -> None:
        self.app, self.expected, self.open_paths = app, f"Bearer {api_key}".encode(), open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if given != self.expected:
            body = error_body(
                "missing or wrong API key (send Authorization: Bearer <key>)",
                type="authentication_error",
                code="invalid_api_key",
            )
            return await send_error(send, 401, body, [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


def _find_lone_surrogate(value: Any) -> str | None:
    """A string in a parsed JSON value that cannot be encoded as UTF-8, or None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return v
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def check_body_text(body: bytes) -> str | None:
    """Why a request body cannot be taken as text (a message), or None when it can."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return (
            f"the request body is not valid UTF-8 (byte {e.start}: "
            f"{body[e.start : e.start + 4].hex(' ')})"
        )
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None  # not JSON at all: the route's parser says so
    bad = _find_lone_surrogate(parsed)
    if bad is not None:
        where = bad.encode("utf-8", "backslashreplace").decode()[:60]
        return (
            f"the request body holds a lone UTF-16 surrogate escape in the string {where!r}; "
            "JSON strings must be valid Unicode"
        )
    return None


class BodyGuard:
    """Args:
    app: the application inside.
    max_bytes: the largest body accepted (413 above it).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: int | None) -> dict:
        got = "" if size is None else f" ({size} bytes)"
        return error_body(
            f"the request body is too large{got}; this server accepts at most "
            f"{self.max_bytes} bytes (lutlm serve --max-request-bytes)",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await send_error(send, 413, self._too_large(int(length)))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await send_error(send, 413, self._too_large(None))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if len(body) > _OFF_LOOP_BYTES:
            problem = await asyncio.to_thread(check_body_text, body)
        else:
            problem = check_body_text(body)
        if problem is not None:
            return await send_error(send, 400, error_body(problem))

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what follows the body: the disconnect, if any

        await self.app(scope, replay, send)
