"""A tokenizer in an HF model directory, read and written.

Read: `tokenizer.json`, else `tokenizer.model` (sentencepiece); `tokenizer_config.json`
(bos/eos tokens, add_bos_token, chat template), `chat_template.jinja`/`chat_template.json`,
and the `eos_token_id` of `generation_config.json` and `config.json` (an int or a list).
Written: what the reader reads back the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tokenizers

from lutlm.formats.json_object import read_json_object
from lutlm.tokenizer.sentencepiece_vocab import (
    SpmVocab,
    read_sentencepiece_model,
    sentencepiece_backend,
)
from lutlm.tokenizer.special_tokens import (
    TokenizerParts,
    add_config_tokens,
    add_typed_tokens,
    set_bos_eos,
)


def read_hf_tokenizer(path: str | Path) -> TokenizerParts:
    """The tokenizer of an HF model directory (see `Tokenizer.from_pretrained`).

    Raises:
        ValueError: the directory or its tokenizer file is missing or malformed, naming
            the file and what was expected.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(
            f"{root}: not a directory (expected an HF model directory holding tokenizer.json "
            "or tokenizer.model)"
        )
    config = _read_json(root / "tokenizer_config.json")
    texts = {
        k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    backend, spm = _backend(root, config, texts)
    bos, eos = (
        None if texts[k] is None else backend.token_to_id(texts[k])
        for k in ("bos_token", "eos_token")
    )
    if spm is not None:  # tokenizer.json has its own post-processor; this has none
        add_bos = config.get("add_bos_token", bos is not None)
        set_bos_eos(backend, bos if add_bos else None, eos if config.get("add_eos_token") else None)
    eos_ids = set() if eos is None else {eos}
    for name in ("generation_config.json", "config.json"):
        extra = _read_json(root / name)
        ids = extra.get("eos_token_id")
        eos_ids.update(i for i in (ids if isinstance(ids, list) else [ids]) if isinstance(i, int))
        if bos is None and isinstance(extra.get("bos_token_id"), int):
            bos = extra["bos_token_id"]
            texts["bos_token"] = backend.id_to_token(bos)
    return TokenizerParts(
        backend,
        bos_token_id=bos,
        eos_token_ids=eos_ids,
        chat_templates=_read_chat_templates(root, config),
        template_tokens={k: v for k, v in texts.items() if v is not None},
        name=str(root),
    )


def _backend(
    root: Path, config: dict, texts: dict[str, str | None]
) -> tuple[tokenizers.Tokenizer, SpmVocab | None]:
    """tokenizer.json's backend, else one built from tokenizer.model (returned too), whose
    BOS/EOS texts fill those tokenizer_config.json leaves out (in `texts`)."""
    if (root / "tokenizer.json").is_file():
        file = root / "tokenizer.json"
        try:
            return tokenizers.Tokenizer.from_file(str(file)), None
        except Exception as e:  # the Rust side raises plain Exception
            raise ValueError(f"{file}: not a valid tokenizers JSON file ({e})") from e
    if (root / "tokenizer.model").is_file():
        spm = read_sentencepiece_model(root / "tokenizer.model")
        backend = sentencepiece_backend(spm)
        add_typed_tokens(backend, spm.pieces, spm.types)
        add_config_tokens(backend, config, root / "tokenizer_config.json")
        for key, i in (("bos_token", spm.bos_id), ("eos_token", spm.eos_id)):
            if texts[key] is None and 0 <= i < len(spm.pieces):
                texts[key] = spm.pieces[i]
        return backend, spm
    raise ValueError(f"{root}: no tokenizer.json or tokenizer.model in this directory")


def write_hf_tokenizer(
    path: str | Path,
    backend: tokenizers.Tokenizer,
    *,
    bos_token_id: int | None,
    eos_token_ids: Iterable[int],
    chat_templates: Mapping[str, str],
    template_tokens: Mapping[str, str],
) -> None:
    """Write tokenizer.json (the backend, whose post-processor adds BOS/EOS),
    tokenizer_config.json (the special tokens' texts and the chat templates) and
    generation_config.json (every end-of-sequence id, and the BOS id) into `path`
    (created if missing)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    backend.save(str(root / "tokenizer.json"))
    config: dict[str, Any] = dict(template_tokens)
    if list(chat_templates) == ["default"]:
        config["chat_template"] = chat_templates["default"]
    elif chat_templates:
        config["chat_template"] = [
            {"name": name, "template": source} for name, source in chat_templates.items()
        ]
    generation: dict[str, Any] = {"eos_token_id": sorted(eos_token_ids)}
    if bos_token_id is not None:
        generation["bos_token_id"] = bos_token_id
    for name, value in (
        ("tokenizer_config.json", config),
        ("generation_config.json", generation),
    ):
        (root / name).write_text(json.dumps(value, indent=2, ensure_ascii=False), "utf-8")


def _read_json(file: Path) -> dict:
    """A JSON object file, or {} when it does not exist."""
    return read_json_object(file) if file.is_file() else {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_chat_templates(root: Path, config: dict) -> dict[str, str]:
    """Chat templates by name: chat_template.jinja, else chat_template.json, else
    tokenizer_config.json's chat_template (a string, or a list of {name, template})."""
    if (root / "chat_template.jinja").is_file():
        value: Any = (root / "chat_template.jinja").read_text(encoding="utf-8")
    else:
        value = _read_json(root / "chat_template.json").get("chat_template")
        if value is None:
            value = config.get("chat_template")
    if value is None:
        return {}
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, list) and all(isinstance(t, dict) and "name" in t for t in value):
        return {t["name"]: t["template"] for t in value}
    raise ValueError(f"{root}: chat_template is neither a string nor a list of {{name, template}}")
