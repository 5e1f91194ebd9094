"""What lutlm detected about this CPU and which kernel each operation will use."""

from __future__ import annotations

from typing import Any

from lutlm import _C


def cpu_info() -> dict[str, Any]:
    """Return the detected CPU, the kernel ISA in use, the thread count and the
    kernel method (``lut`` or ``mad``) chosen for each operation by batch size."""
    info = dict(_C.cpu_info())
    lut_max = info.pop("lut_max_m")
    info["kernels"] = {
        "ternary_gemm": {
            f"M<={lut_max['ternary']}": f"lut/{info['isa']}",
            f"M>{lut_max['ternary']}": f"mad/{info['isa']}",
        },
        # Bit-plane layout (the quantizer's default): LUT below the crossover.
        "int4_gemm": {
            f"M<={lut_max['int4']}": f"lut/{info['isa']}",
            f"M>{lut_max['int4']}": f"mad/{info['isa']}",
        },
        # Nibble layout, what model layers load as: MAD at every batch size.
        "int4_nibbles": {"any M": f"mad/{info['isa']}"},
        "int8_gemm": {"any M": f"mad/{info['isa']}"},
    }
    return info


def format_cpu_info(info: dict[str, Any] | None = None) -> str:
    """Human-readable form of :func:`cpu_info` for ``lutlm info``."""
    info = info or cpu_info()
    lines = [
        f"cpu:        {info['model']} ({info['arch']})",
        f"features:   {' '.join(info['features']) or '-'}",
        f"cores:      {info['physical_cores']} physical, {info['logical_cpus']} logical",
        f"threads:    {info['num_threads']}",
        f"isa:        {info['isa']} (available: {', '.join(info['available_isas'])})",
        "kernels:",
    ]
    for op, table in info["kernels"].items():
        for rng, path in table.items():
            lines.append(f"  {op:<14} {rng:<7} {path}")
    return "\n".join(lines)
