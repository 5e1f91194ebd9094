"""Schemathesis against a live `lutlm serve`: requests generated from the server's own
OpenAPI schema, valid and invalid, for every route. Whatever arrives, the answer is never
a 5xx, every 4xx is in OpenAI's error shape, and the server still answers afterwards.

The model is a tiny random Qwen2 checkpoint with a 96-token context, so a request that
is valid still finishes quickly; the number of cases per route is bounded
(LUTLM_FUZZ_EXAMPLES, default 25 per generation mode).
"""

from __future__ import annotations

import os

import pytest

from lutlm.server import ServerConfig

from .test_server import LiveServer
from .test_tasks_e2e import tiny_model

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = int(os.environ.get("LUTLM_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    path = tiny_model(tmp_path_factory.mktemp("fuzz") / "qwen2", "qwen2")
    srv = LiveServer(
        ServerConfig.from_options(
            model=str(path),
            served_model_name="tiny",
            api_key=KEY,
            max_model_len=96,
            kv_cache_memory_gb=0.02,
            weights="f32",
            head="f32",
            max_n=4,
        )
    )
    yield srv
    srv.stop()


def _operations(live):
    """(label, operation) of every route in the live server's OpenAPI schema."""
    schema = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{live.port}/openapi.json", headers=AUTH
    )
    return [(op.label, op) for op in (r.ok() for r in schema.get_all_operations())]


def test_no_input_gets_a_5xx_or_an_error_out_of_shape(live):
    """Valid and invalid bodies, parameters and headers for every route (hypothesis drives
    schemathesis' strategies directly: its pytest plugin follows pytest's internals)."""
    base = f"http://127.0.0.1:{live.port}"

    def check(case) -> None:
        calls.append(case.operation.label)
        response = case.call(base_url=base, headers=AUTH, timeout=60)
        where = case.as_curl_command()
        assert response.status_code < 500, (where, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}, (where, body)
            assert set(body["error"]) == {"message", "type", "param", "code"}, (where, body)
            assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert live.request("GET", "/health")[0] == 200

    calls: list[str] = []
    operations = _operations(live)
    assert len(operations) >= 8  # every route was found
    for label, op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = given(case=op.as_strategy(generation_mode=mode))(check)
            run = settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )(run)
            try:
                run()
            except Unsatisfiable:
                # A route without parameters or body (GET /health) has no invalid request.
                assert mode is GenerationMode.NEGATIVE, label
            except Exception as e:
                raise AssertionError(f"{label} ({mode.value}): {e}") from e
    # Each route got its share of cases (hypothesis may stop early on a small space).
    assert len(calls) >= len(operations) * 3, calls
