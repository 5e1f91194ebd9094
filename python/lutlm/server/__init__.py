"""The OpenAI-compatible HTTP server (`lutlm serve`)."""

from lutlm.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
