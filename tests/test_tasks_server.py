"""POST /v1/tasks/* on a live `lutlm serve` (uvicorn on loopback) with a tiny random
DeepSeek-architecture model: generation goes through the server's async engine, the
verifiers really run, test drivers travel as sources in the body, and bad requests get
OpenAI-shaped errors."""

import base64
import json
import subprocess
import time

import pytest

from lutlm.server import ServerConfig

from .test_tasks_e2e import (
    CHECK_DRIVER,
    PRINT_DRIVER,
    SUM_TO,
    asm_for,
    c_to,
    require_tools,
    sum_to_ir,
    tiny_model,
)

pytest.importorskip("uvicorn")
from .test_server import LiveServer  # noqa: E402

KEY = "task-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SHORT = {"max_tokens": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tiny_model(tmp_path_factory.mktemp("srv") / "deepseek", "deepseek")
    srv = LiveServer(
        ServerConfig.from_options(
            model=str(path),
            served_model_name="tiny",
            api_key=KEY,
            kv_cache_memory_gb=0.05,
            weights="f32",
            head="f32",
            allow_test_execution=True,
        )
    )
    yield srv
    srv.stop()


def test_tests_in_a_request_need_the_servers_consent(tmp_path):
    path = tiny_model(tmp_path / "deepseek", "deepseek")
    srv = LiveServer(ServerConfig.from_options(model=str(path), weights="f32", head="f32"))
    try:
        body = {"asm": "f:\n\tret\n", "target": "aarch64", "tests": [PRINT_DRIVER], **SHORT}
        status, out = srv.request("POST", "/v1/tasks/transpile", body)
        assert status == 403 and out["error"]["param"] == "tests"
        assert "--allow-test-execution" in out["error"]["message"]
        body = {"asm": "f:\n\tret\n", "tests": [PRINT_DRIVER], **SHORT}
        status, out = srv.request("POST", "/v1/tasks/decompile", body)
        assert status == 403
    finally:
        srv.stop()


def post(server, path, body, headers=AUTH):
    return server.request("POST", path, body, headers=headers)


def check_report(body: dict, task: str, preset: str) -> None:
    assert body["task"] == task and body["preset"] == preset
    assert body["status"] in ("failed", "unverified")  # random weights answer garbage
    assert body["verification"]["status"] == body["status"]
    assert body["prompt_tokens"] > 10 and body["attempts"]


def test_decompile_endpoint_from_binary_with_tests_in_the_body(server, tmp_path):
    require_tools("gcc", "objdump")
    obj = c_to(tmp_path, SUM_TO, ["gcc", "-O0", "-c"], "sum.o")
    body = {
        "binary": base64.b64encode(obj.read_bytes()).decode(),
        "function": "sum_to",
        "tests": [CHECK_DRIVER],
        **SHORT,
    }
    status, out = post(server, "/v1/tasks/decompile", body)
    assert status == 200, out
    check_report(out, "decompile", "llm4decompile")
    assert out["input"].startswith("<sum_to>:") and out["status"] == "failed"
    # The same function given as assembly text, no tests: C that does not compile fails,
    # anything else is unverified.
    status, out2 = post(server, "/v1/tasks/decompile", {"asm": out["input"], **SHORT})
    assert status == 200 and out2["prompt"] == out["prompt"]
    status, err = post(server, "/v1/tasks/decompile", {**body, "function": "nope"})
    assert status == 400 and "'nope' not found" in err["error"]["message"]


def test_transpile_and_optimize_endpoints(server, tmp_path):
    require_tools("gcc", "llvm-mc", "arm-linux-gnueabi-gcc", "qemu-arm")
    x86 = asm_for(tmp_path, SUM_TO, "gcc")
    body = {"asm": x86, "target": "armv5", "tests": [PRINT_DRIVER], **SHORT}
    status, out = post(server, "/v1/tasks/transpile", body)
    assert status == 200, out
    check_report(out, "transpile", "crt")
    assert out["input"].startswith(".intel_syntax noprefix")
    ir = sum_to_ir(tmp_path)
    status, out = post(server, "/v1/tasks/optimize-ir", {"ir": ir, "n": 2, "seed": 1, **SHORT})
    assert status == 200, out
    check_report(out, "optimize-ir", "llm-compiler")
    assert len(out["attempts"]) == 2


def test_task_errors_have_the_openai_shape(server):
    def error(body, path="/v1/tasks/transpile", **kw):
        status, out = post(server, path, body, **kw)
        assert status in (400, 401, 404), out
        assert set(out["error"]) == {"message", "type", "param", "code"}
        return status, out["error"]

    asm = "f:\n\tret\n"
    assert error({"asm": asm, "target": "armv5"}, headers={})[0] == 401
    _, e = error({"asm": asm, "target": "armv5", "preset": "nope"})
    assert e["param"] == "preset" and "choose one of: crt, gg, superopt" in e["message"]
    _, e = error({"asm": asm, "target": "mips"})
    assert e["param"] == "target"
    _, e = error({"asm": asm, "target": "armv5", "preset": "superopt"})
    assert "transpiles to x86_64" in e["message"]
    _, e = error({"asm": asm, "target": "armv5", "test": ["int main(){}"]})
    assert e["param"] == "test"  # a misspelt field is refused, not ignored
    _, e = error({"asm": asm, "target": "armv5", "n": "2"})
    assert e["param"] == "n"
    for n in (17, 10**25):  # above the server's --max-n (16)
        _, e = error({"asm": asm, "target": "armv5", "n": n}, "/v1/tasks/transpile")
        assert e["param"] == "n" and "between 1 and 16" in e["message"]
    _, e = error({"asm": asm, "target": "aarch64", "preset": "gg", **SHORT})
    assert "chat template" in e["message"]  # this model has none
    _, e = error({"asm": "f:", "binary": "AAAA", "function": "f"}, "/v1/tasks/decompile")
    assert "exactly one of asm and binary" in e["message"]
    _, e = error({"binary": "%%%", "function": "f"}, "/v1/tasks/decompile")
    assert e["param"] == "binary"
    status, e = error({"ir": "x", "model": "other"}, "/v1/tasks/optimize-ir")
    assert status == 404
    status, out = server.request("POST", "/v1/tasks/optimize-ir", raw="{bad", headers=AUTH)
    assert status == 400 and "not valid JSON" in out["error"]["message"]


def test_cli_decompile_reports_json(tmp_path):
    """`lutlm decompile BINARY --function NAME --tests FILE.c --json` in a subprocess."""
    require_tools("gcc", "objdump")
    import json
    import os
    import sys

    model = tiny_model(tmp_path / "m", "deepseek")
    obj = c_to(tmp_path, SUM_TO, ["gcc", "-O0", "-c"], "sum.o")
    (tmp_path / "check.c").write_text(CHECK_DRIVER)
    argv = [sys.executable, "-m", "lutlm.cli", "decompile", str(obj), "--function", "sum_to"]
    argv += ["--tests", str(tmp_path / "check.c"), "--model", str(model), "--weights", "f32"]
    argv += ["--head", "f32", "--max-tokens", "8", "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    out = json.loads(proc.stdout)
    assert out["status"] == "failed" and proc.returncode == 1
    assert out["input"].startswith("<sum_to>:")
    bad = subprocess.run(
        [*argv[:6], "nope", *argv[7:]], capture_output=True, text=True, timeout=120, env=env
    )
    assert bad.returncode == 2 and "'nope' not found" in bad.stderr


def test_task_inputs_cannot_read_server_files(server, tmp_path):
    """The exploits found on the task endpoints: assembly, IR and C that read files
    (the server's own, or /dev/zero to exhaust memory) are 400s naming the directive,
    refused before any tool runs, and no response carries the files' bytes."""
    os_release = open("/etc/os-release").read()
    passwd_lines = [line for line in open("/etc/passwd").read().splitlines() if line]
    cases = [
        (
            "/v1/tasks/transpile",
            {"asm": '.data\n.incbin "/etc/os-release", 0, 64\n', "target": "aarch64"},
            ".incbin",
        ),
        (
            "/v1/tasks/transpile",
            {"asm": '.include "/etc/passwd"\n', "target": "aarch64"},
            ".include",
        ),
        (
            "/v1/tasks/transpile",
            {"asm": '.data\n.incbin "/dev/zero"\n', "target": "riscv64"},
            ".incbin",
        ),
        (
            "/v1/tasks/transpile",
            {
                "asm": "f:\n\tret\n",
                "target": "aarch64",
                "tests": ['#include "/etc/passwd"\nint main(){}\n'],
            },
            "#include",
        ),
        (
            "/v1/tasks/decompile",
            {"asm": "f:\n\tret\n", "tests": ["#include </../etc/passwd>\nint main(){}\n"]},
            "#include",
        ),
        (
            "/v1/tasks/optimize-ir",
            {"ir": 'module asm ".incbin \\22/etc/os-release\\22"\n'},
            ".incbin",
        ),
    ]
    for path, body, directive in cases:
        t0 = time.monotonic()
        status, out = post(server, path, {**body, "max_tokens": 1})
        assert status == 400, (path, body, out)
        assert directive in out["error"]["message"]
        assert time.monotonic() - t0 < 10
        text = json.dumps(out)
        assert os_release[:40] not in text
        assert not any(line in text for line in passwd_lines)
