"""NEON kernels vs scalar kernels: cross-built for AArch64 and run under qemu-aarch64."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

RUN_SH = Path(__file__).resolve().parent / "native" / "run.sh"

# tool -> Debian package that provides it
TOOLS = {
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
    "qemu-aarch64": "qemu-user",
}


def test_neon_kernels_match_scalar_under_qemu():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pkgs = " ".join(TOOLS[tool] for tool in missing)
        msg = f"{', '.join(missing)} not found; install with: apt-get install {pkgs}"
        if os.environ.get("LUTLM_REQUIRE_ARM_TEST") == "1":
            pytest.fail(f"LUTLM_REQUIRE_ARM_TEST=1 but {msg}")
        pytest.skip(msg)

    proc = subprocess.run(
        ["bash", str(RUN_SH)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"run.sh exited {proc.returncode}:\n{out}"
    # Last line is "N passed, M failed"; a bare substring test would accept "10 failed".
    lines = proc.stdout.strip().splitlines()
    assert lines and re.fullmatch(r"\d+ passed, 0 failed", lines[-1]), out
