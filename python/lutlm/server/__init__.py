"""The OpenAI-compatible HTTP server (`lutlm serve`)."""

from lutlm.server.app import create_app
from lutlm.server.state import ServerConfig

__all__ = ["ServerConfig", "create_app"]
