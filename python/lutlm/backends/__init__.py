"""Where a model runs: "cpu" (lutlm._C, the model/ package as is) or "cuda" (torch and the
Triton kernels of lutlm.kernels, :class:`lutlm.backends.gpu.GpuDecoder`).

This module imports neither torch nor triton, so a CPU-only install never pays for them.
"""

from __future__ import annotations

import importlib.util

DEVICES = ("auto", "cpu", "cuda")
GPU_EXTRA_HINT = 'install the GPU extra: pip install "lutlm[gpu]" (torch with CUDA, triton)'


def _gpu_stack_missing() -> list[str]:
    return [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]


def resolve_device(device: str = "auto") -> str:
    """ "cpu" or "cuda" for a requested device.

    "auto" picks "cuda" when torch and triton are installed and torch sees a GPU, else
    "cpu". "cuda" (or "cuda:N") without them raises RuntimeError saying what is missing.
    """
    if device == "cpu":
        return "cpu"
    if device != "auto" and not device.startswith("cuda"):
        raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")
    missing = _gpu_stack_missing()
    if missing:
        if device == "auto":
            return "cpu"
        raise RuntimeError(f"--device {device} needs {' and '.join(missing)}; {GPU_EXTRA_HINT}")
    import torch

    if not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise RuntimeError(
            f"--device {device}: torch {torch.__version__} ({build}) sees no CUDA GPU; "
            f"use --device cpu, or {GPU_EXTRA_HINT}"
        )
    return "cuda" if device == "auto" else device


__all__ = ["DEVICES", "resolve_device"]
