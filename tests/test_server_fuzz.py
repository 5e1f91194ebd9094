"""Schemathesis against a live `lutlm serve`: requests generated from the server's own
OpenAPI schema, valid and invalid, for every route. Whatever arrives, the answer is never
a 5xx, every 4xx is in OpenAI's error shape, and the server still answers afterwards.

The model is a tiny random Qwen2 checkpoint with a 96-token context, so a request that
is valid still finishes quickly; the number of cases per route is bounded
(LUTLM_FUZZ_EXAMPLES, default 30).
"""

from __future__ import annotations

import os

import pytest

from lutlm.server import ServerConfig

from .test_server import LiveServer
from .test_tasks_e2e import tiny_model

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = int(os.environ.get("LUTLM_FUZZ_EXAMPLES", "30"))


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


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{live.port}/openapi.json", headers=AUTH)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_gets_a_5xx_or_an_error_out_of_shape(case, live):
    response = case.call(base_url=f"http://127.0.0.1:{live.port}", headers=AUTH, timeout=60)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert live.request("GET", "/health")[0] == 200
