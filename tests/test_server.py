"""`lutlm serve` on loopback with the real SmolLM2 model, driven by the `openai` client
and by raw HTTP (stdlib http.client) for what a well-behaved client never sends."""

import asyncio
import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest

from lutlm.model import ForwardBatch, KVCache
from lutlm.server import ServerConfig, create_app

from .model_assets import smollm2_path

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

KEY = "test-key"
PARIS = [{"role": "user", "content": "What is the capital of France?"}]


class LiveServer:
    def __init__(self, config: ServerConfig) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.app = create_app(config)
        cfg = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                status, _ = self.request("GET", "/health")
            except OSError:
                time.sleep(0.05)
                continue
            if status == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    @property
    def state(self):
        return self.app.state.lutlm

    def request(self, method, path, body=None, headers=None, raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text

    def client(self, **kw):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=KEY, **kw)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server():
    srv = LiveServer(
        ServerConfig.from_options(
            model=str(smollm2_path()),
            served_model_name="smol",
            api_key=KEY,
            max_model_len=512,
            kv_cache_memory_gb=0.25,
        )
    )
    yield srv
    srv.stop()


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_health_models_and_auth(server):
    status, body = server.request("GET", "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = server.request("GET", "/v1/models", headers={"Authorization": "Bearer no"})
    assert status == 401
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["smol"]


def test_loading_server_answers_503():
    from fastapi.testclient import TestClient

    app = create_app(ServerConfig.from_options(model=str(smollm2_path())))
    client = TestClient(app)  # no lifespan: the model never starts loading
    assert client.get("/health").status_code == 503
    r = client.post("/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 503 and r.json()["error"]["message"] == "the model is still loading"


def test_chat_and_completions(server):
    c = server.client()
    r = c.chat.completions.create(model="smol", messages=PARIS, temperature=0, max_tokens=30)
    assert "Paris" in r.choices[0].message.content
    assert r.usage.prompt_tokens > 10 and r.usage.completion_tokens <= 30
    assert r.choices[0].finish_reason in ("stop", "length")
    # The same answer streamed, chunk by chunk.
    chunks = list(
        c.chat.completions.create(
            model="smol",
            messages=PARIS,
            temperature=0,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    comp = c.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=6, temperature=0
    )
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(
            model="smol",
            prompt="The capital of France is",
            max_tokens=6,
            temperature=0,
            stream=True,
        )
        if ch.choices
    )
    assert comp.choices[0].text == streamed and "Paris" in streamed


def test_n_seed_logprobs_stop_and_max_completion_tokens(server):
    c = server.client()
    kw = dict(model="smol", messages=PARIS, temperature=1.0, max_tokens=12, seed=5)
    a = c.chat.completions.create(n=2, **kw)
    b = c.chat.completions.create(n=2, **kw)
    assert [ch.index for ch in a.choices] == [0, 1]
    assert [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]
    r = c.chat.completions.create(
        model="smol",
        messages=PARIS,
        temperature=0,
        max_completion_tokens=5,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    assert r.usage.completion_tokens == 5
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:  # greedy: the chosen token is the most likely one
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
        assert entry.logprob <= 0
    s = c.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=10, temperature=0, stop=["."]
    )
    assert s.choices[0].finish_reason == "stop" and "." not in s.choices[0].text
    lp = c.completions.create(
        model="smol", prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=2
    ).choices[0]
    assert len(lp.logprobs.tokens) == 4 and all(len(t) == 2 for t in lp.logprobs.top_logprobs)
    assert "".join(lp.logprobs.tokens) == lp.text
    bo = c.completions.create(
        model="smol", prompt="Once upon a time", max_tokens=6, n=1, best_of=3, seed=1
    )
    assert len(bo.choices) == 1 and bo.usage.completion_tokens <= 18


def test_bad_requests_are_400_in_openai_shape(server):
    cases = [
        ({"prompt": "hi", "temperature": "hot"}, "temperature"),
        ({"prompt": "hi", "temperature": -1}, "temperature"),
        ({"prompt": "hi", "top_p": 0}, "top_p"),
        ({"prompt": "hi", "n": 0}, "n"),
        ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "hi", "logprobs": 50}, "logprobs"),
        ({"prompt": "hi", "stop": 7}, "stop"),
        ({"prompt": "hi", "logit_bias": {"x": 1}}, "logit_bias"),
        ({"prompt": "hi", "n": 1, "best_of": 0}, "best_of"),
        ({"prompt": [99999999]}, "prompt"),
        ({}, "prompt"),
    ]
    for body, param in cases:
        status, resp = server.request("POST", "/v1/completions", body, AUTH)
        assert status == 400, (body, resp)
        err = resp["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == param, (body, err)
        assert param in err["message"] or param == "prompt", err
    status, resp = server.request("POST", "/v1/completions", headers=AUTH, raw="{not json")
    assert status == 400 and "not valid JSON" in resp["error"]["message"]
    status, resp = server.request("POST", "/v1/chat/completions", {"messages": []}, AUTH)
    assert status == 400 and resp["error"]["param"] == "messages"
    status, resp = server.request(
        "POST", "/v1/completions", {"model": "gpt-9", "prompt": "x"}, AUTH
    )
    assert status == 404 and resp["error"]["code"] == "model_not_found"
    # Never silent truncation: the message names both numbers.
    long = {"prompt": [100] * 600, "max_tokens": 10}
    status, resp = server.request("POST", "/v1/completions", long, AUTH)
    assert status == 400 and "maximum context length is 512" in resp["error"]["message"]
    assert "(600 in the prompt, 10 for the completion)" in resp["error"]["message"]
    assert server.request("GET", "/health")[0] == 200  # and the server is still up


def test_concurrent_streams_all_finish_with_their_token_counts(server):
    c = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    lengths = [3 + (i * 7) % 17 for i in range(32)]

    async def one(i: int, n: int):
        stream = await c.completions.create(
            model="smol",
            prompt=f"Request {i}: " + "tell me a story " * (i % 5),
            max_tokens=n,
            temperature=0.7,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        usage, finish = None, None
        async for ch in stream:
            if ch.usage:
                usage = ch.usage
            if ch.choices and ch.choices[0].finish_reason:
                finish = ch.choices[0].finish_reason
        return usage.completion_tokens, finish

    async def all_of():
        return await asyncio.gather(*(one(i, n) for i, n in enumerate(lengths)))

    results = asyncio.run(all_of())
    assert [r[0] for r in results] == lengths
    assert all(r[1] == "length" for r in results)
    engine = server.state.llm.engine
    assert not engine.has_unfinished() and engine.blocks.usage == 0.0


def test_disconnect_mid_stream_frees_the_blocks(server):
    engine = server.state.llm.engine
    aborted = []
    abort = engine.abort
    engine.abort = lambda rid: (aborted.append(rid), abort(rid))  # runs in the engine thread
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = {
        "model": "smol",
        "prompt": "Count: 1, 2, 3,",
        "max_tokens": 400,
        "stream": True,
        "ignore_eos": True,
    }
    conn.request(
        "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json", **AUTH}
    )
    resp = conn.getresponse()
    assert resp.status == 200
    seen = 0
    while seen < 3:  # a few tokens have streamed
        if resp.fp.readline().startswith(b"data: "):
            seen += 1
    assert engine.blocks.usage > 0
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.time() + 10
    while time.time() < deadline and (engine.has_unfinished() or engine.blocks.usage > 0):
        time.sleep(0.05)
    del engine.abort
    assert len(aborted) == 1 and aborted[0].startswith("cmpl-")  # aborted, not finished
    assert not engine.has_unfinished() and engine.blocks.usage == 0.0
    status, text = server.request("GET", "/metrics", headers=AUTH)
    assert "lutlm:kv_cache_usage_perc" in text and "lutlm:time_to_first_token_seconds" in text


def test_lm_eval_loglikelihood_shape_matches_the_engines_scoring(server):
    tok = server.state.tokenizer
    ids = tok.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    for max_tokens in (0, 1):  # harnesses send 0 or 1 and drop the generated token
        body = {
            "model": "smol",
            "prompt": [ids],
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": 1,
            "echo": True,
        }
        status, resp = server.request("POST", "/v1/completions", body, AUTH)
        assert status == 200, resp
        lp = resp["choices"][0]["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + max_tokens
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        got = np.array(lp["token_logprobs"][1 : len(ids)])
        assert np.isfinite(got).all() and (got <= 0).all()
        assert all(len(t) == 1 for t in lp["top_logprobs"][1:])
        assert resp["choices"][0]["text"].startswith(tok.decode(ids, skip_special_tokens=False))
    # The engine's own scoring: one forward over the prompt, log_softmax per position.
    model = server.state.llm.model
    cache = KVCache(model.config, num_blocks=8, block_size=16)
    logits = model.forward(ForwardBatch.single(ids, 0, list(range(8)), 16, all_logits=True), cache)
    z = logits[:, : tok.vocab_size].astype(np.float64)
    zmax = z.max(1, keepdims=True)
    ref = z - zmax - np.log(np.exp(z - zmax).sum(1, keepdims=True))
    np.testing.assert_allclose(got, ref[np.arange(len(ids) - 1), ids[1:]], atol=2e-3)


def test_tokenize_and_detokenize(server):
    tok = server.state.tokenizer
    status, body = server.request("POST", "/tokenize", {"prompt": "Hello world"}, AUTH)
    assert status == 200 and body["tokens"] == tok.encode("Hello world")
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 512
    status, body2 = server.request("POST", "/detokenize", {"tokens": body["tokens"]}, AUTH)
    assert status == 200 and body2["prompt"] == "Hello world"
    status, body3 = server.request("POST", "/tokenize", {"messages": PARIS}, AUTH)
    assert status == 200 and body3["count"] > body["count"]
    status, err = server.request("POST", "/detokenize", {"tokens": [-1]}, AUTH)
    assert status == 400 and err["error"]["param"] == "tokens"


def test_prompt_lookup_per_request_gives_the_same_tokens(server):
    code = "int add(int a, int b) {\n    int sum = a + b;\n    return sum;\n}\n"
    messages = [{"role": "user", "content": f"Repeat this code exactly:\n\n{code}"}]
    client = server.client()

    def ask(**extra):
        r = client.chat.completions.create(
            model="smol",
            messages=messages,
            max_tokens=40,
            temperature=0,
            logprobs=True,
            extra_body=extra,
        )
        return r.choices[0].message.content, [t.logprob for t in r.choices[0].logprobs.content]

    def accepted() -> float:
        _, text = server.request("GET", "/metrics", headers=AUTH)
        line = next(x for x in text.splitlines() if x.startswith("lutlm:prompt_lookup_accepted"))
        return float(line.split()[-1])

    before = accepted()
    assert ask(prompt_lookup=8) == ask()
    assert accepted() > before  # the drafts were used, and accepted
    stream = client.chat.completions.create(
        model="smol",
        messages=messages,
        max_tokens=40,
        temperature=0,
        stream=True,
        extra_body={"prompt_lookup": 8},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ask()[0]
    status, body = server.request(
        "POST",
        "/v1/chat/completions",
        {"model": "smol", "messages": messages, "prompt_lookup": 99},
        headers=AUTH,
    )
    assert status == 400 and body["error"]["param"] == "prompt_lookup"


def test_unsupported_fields_are_refused_and_unknown_ones_logged(server, caplog):
    """What lutlm cannot do yet is a 400 naming the parameter, not free text where the
    client expects JSON or a tool call; an unknown field (a typo) is logged by name."""
    c = server.client()
    cases = [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            "tools",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="smol", messages=PARIS, max_tokens=1, **extra)
        assert e.value.body["param"] == param
    r = c.chat.completions.create(
        model="smol", messages=PARIS, max_tokens=1, response_format={"type": "text"}
    )
    assert r.choices[0].finish_reason == "length"
    with caplog.at_level("WARNING", logger="lutlm.server"):
        status, _ = server.request(
            "POST",
            "/v1/completions",
            {"prompt": "hi", "max_tokens": 1, "max_token": 5, "store": True},
            AUTH,
        )
    assert status == 200
    logged = [r.getMessage() for r in caplog.records if "unknown request fields" in r.getMessage()]
    assert logged and "max_token" in logged[-1] and "store" not in logged[-1]
    # The client picks the names: many long ones (and a newline) log one bounded line.
    hostile = {f"x{i}{'y' * 5000}\n": 1 for i in range(200)}
    with caplog.at_level("WARNING", logger="lutlm.server"):
        status, _ = server.request(
            "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1, **hostile}, AUTH
        )
    assert status == 200
    line = [r.getMessage() for r in caplog.records if "unknown request fields" in r.getMessage()]
    assert "and 190 more" in line[-1] and len(line[-1]) < 1200 and "\n" not in line[-1]


def test_tokenizer_info_serves_what_a_remote_tokenizer_reads(server):
    """GET /tokenizer_info: the EOS text (which /tokenize turns back into the EOS id, as
    lm-evaluation-harness's remote tokenizer does), BOS, and the file's own chat template."""
    import gguf

    assert server.request("GET", "/tokenizer_info")[0] == 401
    status, info = server.request("GET", "/tokenizer_info", headers=AUTH)
    assert status == 200 and info["model_max_length"] == 512
    reader = gguf.GGUFReader(str(smollm2_path()))
    field = reader.fields["tokenizer.chat_template"]
    assert info["chat_template"] == bytes(field.parts[field.data[0]]).decode()
    eos_id = int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    body = {"prompt": info["eos_token"], "add_special_tokens": False}
    status, out = server.request("POST", "/tokenize", body, AUTH)
    assert status == 200 and out["tokens"] == [eos_id]
    assert isinstance(info["bos_token"], str) and info["vocab_size"] == 49152
