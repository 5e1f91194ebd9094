"""Prometheus metrics of one server (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lutlm.engine.async_engine import EngineStats

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    40.0,
    80.0,
)


class Metrics:
    def __init__(self, model_name: str) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["model_name"]
        self.requests = Counter(
            "lutlm:request_success",
            "Finished requests by finish reason.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "lutlm:prompt_tokens", "Prompt tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "lutlm:generation_tokens", "Tokens generated.", labels, registry=r
        )
        self.running = Gauge(
            "lutlm:num_requests_running", "Sequences in the running batch.", labels, registry=r
        )
        self.waiting = Gauge(
            "lutlm:num_requests_waiting", "Sequences waiting to be scheduled.", labels, registry=r
        )
        self.kv_usage = Gauge(
            "lutlm:kv_cache_usage_perc",
            "Fraction of KV-cache blocks in use (0..1).",
            labels,
            registry=r,
        )
        self.prefix_queries = Gauge(
            "lutlm:prefix_cache_queries",
            "Full prompt blocks looked up in the prefix cache.",
            labels,
            registry=r,
        )
        self.prefix_hits = Gauge(
            "lutlm:prefix_cache_hits",
            "Full prompt blocks found in the prefix cache.",
            labels,
            registry=r,
        )
        self.preemptions = Gauge(
            "lutlm:num_preemptions", "Sequences preempted (recomputed later).", labels, registry=r
        )
        self.draft_tokens = Gauge(
            "lutlm:prompt_lookup_draft_tokens",
            "Prompt-lookup draft tokens verified.",
            labels,
            registry=r,
        )
        self.accepted_tokens = Gauge(
            "lutlm:prompt_lookup_accepted_tokens",
            "Prompt-lookup draft tokens the model accepted.",
            labels,
            registry=r,
        )
        self.ttft = Histogram(
            "lutlm:time_to_first_token_seconds",
            "Time from arrival to the first token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "lutlm:inter_token_latency_seconds",
            "Time between a sequence's tokens.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "lutlm:e2e_request_latency_seconds",
            "Time from arrival to the last token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_name = model_name

    def update(self, s: EngineStats) -> None:
        m = self.model_name
        self.running.labels(m).set(s.running)
        self.waiting.labels(m).set(s.waiting)
        self.kv_usage.labels(m).set(s.kv_cache_usage)
        self.prefix_queries.labels(m).set(s.prefix_cache_queries)
        self.prefix_hits.labels(m).set(s.prefix_cache_hits)
        self.preemptions.labels(m).set(s.preemptions)
        self.draft_tokens.labels(m).set(s.draft_tokens)
        self.accepted_tokens.labels(m).set(s.accepted_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
