"""The CLI and cpu_info report what the kernels will actually use."""

import json
import subprocess
import sys

import lutlm
from lutlm import _C


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
