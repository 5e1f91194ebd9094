"""What the Triton tests need before they import torch and triton."""

import importlib.util
import os

import pytest


def require_triton() -> None:
    """Select Triton's CPU interpreter unless the caller chose (TRITON_INTERPRET=0 on a GPU
    machine), and skip the calling module when torch or triton is missing: fail instead
    under LUTLM_REQUIRE_TRITON=1 (CI), so a missing package cannot pass as skipped tests.
    Call at module level, before importing torch or triton."""
    os.environ.setdefault("TRITON_INTERPRET", "1")
    missing = [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"{' and '.join(missing)} not installed; pip install 'lutlm[test]' (or '[gpu]')"
        if os.environ.get("LUTLM_REQUIRE_TRITON") == "1":
            pytest.fail(f"LUTLM_REQUIRE_TRITON=1 but {msg}", pytrace=False)
        pytest.skip(msg, allow_module_level=True)
