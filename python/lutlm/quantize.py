"""`lutlm quantize`: load a model once and write it as a packed directory with its tokenizer.

It sits above the model layer and the tokenizer (it loads the one and saves the other),
so that formats/packed.py, which only knows the files, imports neither.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lutlm.model.loader import load_model
from lutlm.model.packed import save_packed
from lutlm.tokenizer import Tokenizer

# An HF source's tokenizer, copied as is. config.json comes too: Tokenizer.from_pretrained
# reads eos/bos ids from it.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "config.json",
)


def quantize(
    src: str | Path,
    out: str | Path,
    weights: str = "int4",
    head: str = "int8",
    act_bits: int = 16,
) -> Path:
    """Load src (anything load_model accepts) and write it packed to the directory out.

    Args:
        src: a .gguf file, an HF directory or a packed directory.
        out: the output directory, new or empty.
        weights, head: as for load_model; fixed in the output.
        act_bits: recorded in the manifest; a load still chooses its own.

    Returns:
        out.

    Raises:
        ValueError: a bad source or option, or out exists and is not empty.
    """
    src, out = Path(src), Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty directory; choose a new one")
    # Tokenizer first: a source without one fails before the long conversion.
    tokenizer = None if src.is_dir() else Tokenizer.from_gguf(src)
    # Written in a sibling directory and renamed: a failed run leaves nothing at out.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    tmp.mkdir(parents=True)
    try:
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        else:
            for name in TOKENIZER_FILES:
                if (src / name).is_file():
                    shutil.copyfile(src / name, tmp / name)
        model = load_model(src, weights, head, act_bits, progress=True)
        save_packed(model, tmp, act_bits)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
