"""Reading the small JSON files model directories hold (config.json, the shard index,
tokenizer_config.json), with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(file: Path) -> dict[str, Any]:
    """The JSON object in `file`; a ValueError naming the file when it cannot be read,
    is not JSON, or holds something other than an object."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not a readable JSON file ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{file}: expected a JSON object, found {type(value).__name__}")
    return value
