"""`lutlm serve` against the requests an attacker or a broken client sends: every one is
answered with a 4xx in OpenAI's shape before any work starts (never a 500, never a 200
that turns into an error event), nothing it sends stalls other requests, and a client
that goes away takes its request with it, streamed or not."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from lutlm.server import ServerConfig

from .model_assets import smollm2_path
from .test_server import AUTH, KEY, PARIS, LiveServer

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server():
    srv = LiveServer(
        ServerConfig.from_options(
            model=str(smollm2_path()),
            served_model_name="smol",
            api_key=KEY,
            max_model_len=512,
            kv_cache_memory_gb=0.05,
            max_n=8,
            max_request_bytes=1 << 20,
            allowed_origins=["http://app.example"],
        )
    )
    yield srv
    srv.stop()


def openai_error(status: int, body) -> dict:
    """The error object of an OpenAI-shaped error response."""
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def raw_post(server, path: str, data: bytes, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(
        "POST",
        path,
        body=data,
        headers={"Content-Type": "application/json", **AUTH, **(headers or {})},
    )
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


SURROGATE = '"\\ud800"'  # a lone high surrogate, as a JSON escape


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/completions", '{"model": %s, "prompt": "hi", "max_tokens": 1}'),
        ("/v1/completions", '{"prompt": %s, "max_tokens": 1}'),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": %s}]}'),
        (
            "/v1/chat/completions",
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}]}',
        ),
        ("/tokenize", '{"prompt": %s}'),
        ("/v1/tasks/transpile", '{"asm": %s, "target": "aarch64", "max_tokens": 1}'),
    ],
)
def test_lone_surrogates_and_invalid_utf8_are_400(server, path, template):
    status, body = raw_post(server, path, (template % SURROGATE).encode())
    assert "surrogate" in openai_error(status, body)["message"]
    raw = (template % '"xQQy"').encode().replace(b"QQ", b"\xed\xa0\x80")
    status, body = raw_post(server, path, raw)
    assert "not valid UTF-8" in openai_error(status, body)["message"]
    # A surrogate *pair* is a valid character (here U+1F600) and passes.
    status, _ = raw_post(server, "/tokenize", b'{"prompt": "\\ud83d\\ude00"}')
    assert status == 200


@pytest.mark.parametrize(
    ("part", "says"),
    [
        ({"type": "text", "text": None}, "must be a string"),
        ({"type": "text", "text": 5}, "must be a string"),
        ({"type": "text"}, "must be a string"),
        ({"type": "image_url", "image_url": {"url": "data:,"}}, "'image_url' are not supported"),
        ("just a string", "content"),
    ],
)
def test_bad_content_parts_are_400(server, part, says):
    body = {"messages": [{"role": "user", "content": [part]}], "max_tokens": 1}
    status, out = server.request("POST", "/v1/chat/completions", body, AUTH)
    err = openai_error(status, out)
    assert says in err["message"] and err["param"] == "messages"


def test_parse_errors_unknown_paths_and_methods_have_the_openai_shape(server):
    for raw in (b"{not json", b"", b"[1, 2]", b'"text"'):
        status, body = raw_post(server, "/v1/completions", raw)
        openai_error(status, body)
    status, body = server.request("GET", "/v1/nothing-here", headers=AUTH)
    assert status == 404 and openai_error(status, body)["code"] == "not_found"
    status, body = server.request("GET", "/v1/completions", headers=AUTH)
    assert status == 405 and openai_error(status, body)["code"] == "method_not_allowed"


def test_n_and_best_of_are_capped_before_anything_streams(server):
    for n in (10**25, 9, 0, -1):
        body = {"messages": PARIS, "n": n, "stream": True, "max_tokens": 1}
        status, out = server.request("POST", "/v1/chat/completions", body, AUTH)
        assert openai_error(status, out)["param"] == "n"
    body = {"prompt": list(range(1, 17)), "max_tokens": 0, "n": 200000}
    status, out = server.request("POST", "/v1/completions", body, AUTH)
    assert openai_error(status, out)["param"] == "n"
    body = {"prompt": "hi", "max_tokens": 1, "n": 1, "best_of": 100}
    status, out = server.request("POST", "/v1/completions", body, AUTH)
    assert openai_error(status, out)["param"] == "best_of"


def test_engine_refusals_come_before_the_stream_starts(server):
    """n x (prompt + max_tokens) beyond the KV cache: the engine refuses it; a streamed
    request must get that as its HTTP status, not as an event after a 200."""
    engine = server.state.llm.engine
    per_seq = 500
    assert 8 * per_seq > engine.blocks.num_blocks * engine.block_size  # it cannot fit
    body = {"prompt": "Hello", "max_tokens": per_seq - 10, "n": 8, "temperature": 1.0}
    for stream in (True, False):
        status, out = server.request("POST", "/v1/completions", {**body, "stream": stream}, AUTH)
        assert "KV-cache blocks" in openai_error(status, out)["message"]
    bias = {"messages": PARIS, "logit_bias": {"999999": 1}, "stream": True, "max_tokens": 1}
    status, out = server.request("POST", "/v1/chat/completions", bias, AUTH)
    openai_error(status, out)


def test_large_bodies_are_413_at_once_and_health_keeps_answering(server):
    big = b'{"prompt": "' + b"a" * (2 << 20) + b'", "max_tokens": 1}'
    t0 = time.monotonic()
    status, out = raw_post(server, "/v1/completions", big)
    assert status == 413 and openai_error(413, out)["code"] == "request_too_large"
    assert time.monotonic() - t0 < 5
    # Chunked, with no Content-Length: refused once the limit is passed.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    conn.request(
        "POST",
        "/v1/completions",
        body=chunks,
        headers={**AUTH, "Content-Type": "application/json"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()


def test_health_answers_while_a_large_prompt_is_tokenized(tmp_path):
    """In its own process (a server thread in the test's process would share its GIL):
    a 1 MB prompt takes seconds to tokenize, and /health keeps answering meanwhile."""
    script = (
        "import sys, uvicorn\n"
        "from lutlm.server import ServerConfig, create_app\n"
        "cfg = ServerConfig.from_options(model=sys.argv[1], api_key=sys.argv[3],\n"
        "    max_model_len=512, kv_cache_memory_gb=0.05, max_request_bytes=2 << 20)\n"
        "uvicorn.run(create_app(cfg), host='127.0.0.1', port=int(sys.argv[2]),\n"
        "            log_level='warning')\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(smollm2_path()), str(port), KEY],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:

        def request(method, path, body=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"Content-Type": "application/json", **AUTH}
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            return resp.status, json.loads(data)

        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                if request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        # One token per digit: about 1.5 s of tokenizing on this machine.
        digits = "".join(str(i % 10) for i in range(1 << 20))
        results = {}
        worker = threading.Thread(
            target=lambda: results.update(
                big=request("POST", "/v1/completions", {"prompt": digits, "max_tokens": 1})
            )
        )
        worker.start()
        health = []
        while worker.is_alive():
            t = time.monotonic()
            status, _ = request("GET", "/health")
            health.append((status, time.monotonic() - t))
            time.sleep(0.02)
        worker.join()
        assert openai_error(*results["big"])["code"] == "context_length_exceeded"
        assert len(health) >= 5 and all(s == 200 and dt < 0.5 for s, dt in health), health
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_disconnected_non_streamed_request_is_aborted(server):
    engine = server.state.llm.engine
    aborted = []
    abort = engine.abort
    engine.abort = lambda rid: (aborted.append(rid), abort(rid))  # runs in the engine thread
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps(
            {"prompt": "Count: 1, 2, 3,", "max_tokens": 450, "ignore_eos": True}
        ).encode()
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        deadline = time.time() + 30
        while time.time() < deadline and not engine.has_unfinished():
            time.sleep(0.01)
        assert engine.has_unfinished()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        deadline = time.time() + 10
        while time.time() < deadline and (engine.has_unfinished() or engine.blocks.usage > 0):
            time.sleep(0.05)
        assert aborted and aborted[0].startswith("cmpl-")  # aborted, not run to the end
        assert not engine.has_unfinished() and engine.blocks.usage == 0.0
    finally:
        del engine.abort


def test_the_key_guards_everything_but_health_and_cors_preflight_works(server):
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/v1/models"):
        status, body = server.request("GET", path)
        assert status == 401 and openai_error(status, body)["code"] == "invalid_api_key", path
        assert server.request("GET", path, headers=AUTH)[0] == 200, path
    assert server.request("GET", "/health")[0] == 200
    # A browser's preflight carries no key; the answer must allow the real request.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("access-control-allow-origin") == "http://app.example"
    assert "authorization" in resp.getheader("access-control-allow-headers").lower()
    # ...and a 401 carries the CORS headers too, so the page can show the error.
    conn.request("GET", "/v1/models", headers={"Origin": "http://app.example"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401 and resp.getheader("access-control-allow-origin")
    conn.close()


def test_metrics_can_be_exposed_deliberately(tmp_path):
    srv = LiveServer(
        ServerConfig.from_options(
            model=str(smollm2_path()),
            api_key=KEY,
            max_model_len=128,
            kv_cache_memory_gb=0.02,
            expose_metrics=True,
        )
    )
    try:
        assert srv.request("GET", "/metrics")[0] == 200
        assert srv.request("GET", "/v1/models")[0] == 401
    finally:
        srv.stop()
