"""lutlm's packed-model directory (`lutlm quantize`): arrays written once, mapped at load.

A packed directory holds:

- ``model.safetensors``: every array of a model exactly as the kernels take it (packed
  codes, fp16 scales as uint16 bits, float32 norms, biases, embedding, head);
- ``lutlm.json``: the manifest: this format's name and version, then what the model
  layer writes (model/packed.py: the ModelConfig, act_bits and, per array, its key);
- the tokenizer files, read by ``Tokenizer.from_pretrained``.

This module knows the files, not the model: :func:`write_packed` and
:func:`read_manifest` handle the manifest's frame, :class:`MappedSafetensors` the arrays.
Loading maps model.safetensors once, read-only, and views each array at the offset its
header gives: nothing is converted or copied, so a load costs about the header parse and
pages are read when a forward first touches them. safetensors' ``safe_open`` is not used
for reading because its numpy ``get_tensor`` copies each tensor into a new array.
The kernels only read weights, so read-only arrays are fine.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

MANIFEST = "lutlm.json"
WEIGHTS = "model.safetensors"
FORMAT = "lutlm-packed"
VERSION = 1
_DTYPE_NAMES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int8): "I8",
}


def is_packed(path: str | Path) -> bool:
    """Whether path is a directory written by `lutlm quantize`."""
    return (Path(path) / MANIFEST).is_file()


def write_packed(out: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to out/model.safetensors and manifest, after this format's name and
    version, to out/lutlm.json.

    Args:
        out: an existing directory.
        manifest: what the model layer records (JSON-serializable).
        arrays: key -> array, each C-contiguous (save_file reads the buffer as laid out).
    """
    out = Path(out)
    save_file(arrays, out / WEIGHTS)
    framed = {"format": FORMAT, "version": VERSION, **manifest}
    (out / MANIFEST).write_text(json.dumps(framed, indent=1), encoding="utf-8")
    # safetensors creates its file owner-only (0600); give it the umask's mode, as the rest.
    shutil.copymode(out / MANIFEST, out / WEIGHTS)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a packed directory, its format and version checked.

    Raises:
        ValueError: unreadable, not a lutlm manifest, or a version this lutlm does not
            read, naming the file.
    """
    mfile = Path(path) / MANIFEST
    try:
        manifest = json.loads(mfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{mfile}: not a readable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{mfile}: not a lutlm packed-model manifest (no format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{mfile}: manifest version {manifest.get('version')!r} is not supported (this "
            f"lutlm reads version {VERSION}); quantize the model again with this lutlm"
        )
    return manifest


class MappedSafetensors:
    """A safetensors file mapped read-only; arrays are views of the map, checked first.

    The format: an 8-byte little-endian header length, a JSON header {key: {dtype, shape,
    data_offsets: [begin, end]}} (offsets relative to the end of the header), the data.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            with open(file, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                n = int.from_bytes(f.read(8), "little")
                if self.size < 8 or n > self.size - 8:
                    raise ValueError(
                        f"{file}: truncated: {self.size} bytes, the header alone needs {8 + n}"
                    )
                header = json.loads(f.read(n))
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ValueError(f"{file}: cannot read the packed weights ({e})") from e
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{file}: not a safetensors file (bad header: {e})") from e
        if not isinstance(header, dict):
            raise ValueError(f"{file}: not a safetensors file (the header is not an object)")
        self.header = header
        self.start = 8 + n

    def get(self, key: str, dtype: type[np.generic], shape: tuple[int, ...]) -> np.ndarray:
        """The array under key, which must have this dtype and shape."""
        dt = np.dtype(dtype)
        entry = self.header.get(key)
        if not isinstance(entry, dict):
            raise ValueError(f"{self.file}: array {key!r} is missing")
        want = f"{_DTYPE_NAMES[dt]} {list(shape)}"
        got = f"{entry.get('dtype')} {entry.get('shape')}"
        if got != want:
            raise ValueError(f"{self.file}: array {key!r} is {got}, expected {want}")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and [type(o) for o in offsets] == [int, int]):
            offsets = [0, -1]  # reported below as the wrong size
        begin, end = offsets
        if end - begin != prod(shape) * dt.itemsize or begin < 0:
            raise ValueError(
                f"{self.file}: array {key!r} has data_offsets {[begin, end]}, expected "
                f"{prod(shape) * dt.itemsize} bytes"
            )
        if self.start + end > self.size:
            raise ValueError(
                f"{self.file}: truncated: array {key!r} ends at byte {self.start + end}, "
                f"the file has {self.size}"
            )
        if (self.start + begin) % dt.itemsize:  # save_file aligns every tensor; others may not
            raise ValueError(f"{self.file}: array {key!r} is not aligned to its dtype")
        a = np.frombuffer(self.map, dt, prod(shape), self.start + begin)
        return a.reshape(shape)
