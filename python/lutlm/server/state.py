"""The server's options and the state every route reads: the model, its engine thread,
its metrics."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lutlm.config import EngineConfig, LoadConfig, split_options
from lutlm.engine.async_engine import AsyncEngine
from lutlm.server.metrics import Metrics
from lutlm.server.protocol import APIError

log = logging.getLogger("lutlm.server")


@dataclass(slots=True, kw_only=True)
class ServerConfig:
    """Options of `lutlm serve`: what to load and how to run it (lutlm.config), and the
    server's own. Validated in __post_init__ (ValueError naming the option)."""

    load: LoadConfig = field(default_factory=LoadConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    served_model_name: str | None = None
    api_key: str | None = None
    max_waiting_requests: int = 256  # beyond this many requests in flight: 503
    max_n: int = 16  # the largest n / best_of a request may ask for
    max_request_bytes: int = 16 << 20  # larger bodies: 413
    expose_metrics: bool = False  # /metrics without the API key
    prompt_lookup: int = 0  # draft tokens for requests that don't say (0 = off)
    # /v1/tasks/* may compile and run the C test programs a request carries (in the tool
    # sandbox of lutlm.tasks.sandbox): off unless asked for.
    allow_test_execution: bool = False
    allowed_origins: list[str] = field(default_factory=list)  # CORS off when empty
    web_ui: bool = True  # the chat and tasks page at / (server/web/); --no-web-ui is False

    @classmethod
    def from_options(cls, **options: Any) -> ServerConfig:
        """A ServerConfig from flat keyword options: the server's own fields, and those of
        LoadConfig and EngineConfig (`model=..., max_model_len=512, api_key=...`)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"load", "engine"}
        load, engine = split_options(**{k: v for k, v in options.items() if k not in own})
        return cls(load=load, engine=engine, **{k: v for k, v in options.items() if k in own})

    def __post_init__(self) -> None:
        for name in ("max_n", "max_request_bytes", "max_waiting_requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def default_served_name(model: str | Path | None, model_path: str | Path) -> str:
    """The model id a server answers to without --served-model-name: a repository id as
    given (owner/repo:QUANT; its cached file's name says less, and an HF checkpoint's
    snapshot directory is a commit hash), else the file's name without .gguf."""
    if model is not None and Path(model_path) != Path(model):
        return str(model)
    return Path(model_path).name.removesuffix(".gguf")


class ServerState:
    """The model being served (once loaded), its engine thread and metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.llm = None
        self.engine: AsyncEngine | None = None
        self.model_name = config.served_model_name or "lutlm-model"
        self.metrics: Metrics | None = None
        self.load_error: str | None = None
        self.in_flight = 0
        self.created = int(time.time())

    def load(self) -> None:
        """Load the model (in the background thread create_app starts when none was given)."""
        from lutlm.llm import LLM

        start = time.monotonic()
        try:
            llm = LLM(load=self.config.load, engine=self.config.engine)
        except Exception as e:  # reported by /health and every endpoint
            log.exception("loading the model failed")
            self.load_error = f"loading the model failed: {e}"
            return
        self.attach(llm, time.monotonic() - start)

    def attach(self, llm, load_seconds: float | None = None) -> None:
        """Serve `llm`: start its engine thread; /health turns 200."""
        if self.config.served_model_name is None:
            self.model_name = default_served_name(self.config.load.model, llm.model_path)
        self.metrics = Metrics(self.model_name)
        engine = AsyncEngine(llm.engine, on_step=self.metrics.update)
        engine.start()
        self.llm, self.engine = llm, engine
        if load_seconds is not None:  # loaded here in the background (lutlm serve logs its own)
            log.info(
                "model %s loaded in %.1f s (%s); ready",
                self.model_name,
                load_seconds,
                llm.model_path,
            )

    def ready(self) -> AsyncEngine:
        if self.load_error:
            raise APIError(self.load_error, 500, type="server_error")
        if self.engine is None:
            raise APIError("the model is still loading", 503, type="service_unavailable")
        return self.engine

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.llm.engine.max_model_len

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                f"The model `{name}` does not exist (this server serves `{self.model_name}`).",
                404,
                param="model",
                code="model_not_found",
            )

    @lru_cache(maxsize=65536)  # noqa: B019 (one state per server, token strings never change)
    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)
