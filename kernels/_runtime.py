"""How the kernels are launched: compiled on a GPU, or on the CPU under Triton's interpreter.

Under ``TRITON_INTERPRET=1`` every program instance runs as numpy code, so trying a
dozen autotune configurations per shape would multiply the (already slow) test time;
there each kernel runs one fixed small configuration instead, chosen by its launcher.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import triton


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def tuned(
    kernel: Any,
    configs: Sequence[triton.Config],
    key: list[str],
    reset_to_zero: list[str] | None = None,
    prune: Callable[..., list] | None = None,
) -> Any:
    """The autotuned form of a jitted kernel on a GPU; None under the interpreter (the
    launcher then calls the plain kernel with its fixed configuration)."""
    if interpreting():
        return None

    def bench(fn: Callable[[], Any], quantiles: Sequence[float]) -> Any:
        # Short runs: tuning happens on a model's first steps (once per shape key), where
        # Triton's default 25 + 100 ms per configuration would stall them for seconds.
        return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)

    return triton.autotune(
        configs=list(configs),
        key=key,
        reset_to_zero=reset_to_zero,
        prune_configs_by={"early_config_prune": prune} if prune else None,
        do_bench=bench,
    )(kernel)
