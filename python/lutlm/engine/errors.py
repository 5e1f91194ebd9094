"""The error a request is refused with, typed so that callers can map it (the server to
OpenAI's error shape) without parsing messages."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A request the engine will not run.

    Args:
        message: what is wrong, in words a client can act on.
        param: the request parameter at fault ("prompt", "max_tokens", "n", ...), if one.
        code: a machine-readable reason ("context_length_exceeded"), if one.
    """

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code
