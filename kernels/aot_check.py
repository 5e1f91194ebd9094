"""Compile lutlm's Triton kernels for an NVIDIA GPU without one: ``triton.compile`` with an
explicit target runs the whole pipeline (Triton IR -> GPU IR -> LLVM -> PTX -> cubin with
the ptxas bundled in the triton wheel). The interpreter runs the kernel source with numpy
and cannot see what only the compiler rejects (layouts, tl.dot shapes, constexpr use);
this can, and reports each variant's registers, spill stack and shared memory.

    TRITON_INTERPRET=0 python -m lutlm.kernels.aot_check [--arch 90] [--all]

Without --all: every kernel once per weight format and code path (the CI check, tests/
test_triton_kernels.py); with --all: every autotune configuration as well.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    # triton.jit reads the variable when the kernels are defined, below.
    raise SystemExit("aot_check compiles kernels: run it with TRITON_INTERPRET=0")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from . import attention, layer_ops, quant_gemm  # noqa: E402


@dataclass
class Variant:
    kernel: object  # a triton JITFunction
    types: dict[str, str]  # runtime argument -> Triton type ("*fp16", "i32", "fp32")
    constants: dict[str, object]  # constexpr argument -> value
    num_warps: int = 4
    num_stages: int = 3  # Triton's default

    @property
    def name(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in self.constants.items())
        return f"{self.kernel.__name__}[{consts}]"


def _gemm_types(lut: bool, scale: str) -> dict[str, str]:
    t = {"x_ptr": "*fp32", "w_ptr": "*i32", "d_ptr": scale, "m_ptr": scale, "y_ptr": "*fp32"}
    if lut:
        t["lut_ptr"] = "*fp32"
        t["NBYTES"] = "i32"
    t.update({k: "i32" for k in ("M", "N", "K", "stride_xm", "stride_ym", "M_BUCKET")})
    return t


# (GS, BITS, ZERO, HAS_MIN, scale type): INT4 Q4_0 and Q4_1 at groups 32 and 128, ternary
# (one fp32 scale per row), INT8.
_FORMATS = [
    (32, 4, 8, False, "*fp16"),
    (128, 4, 8, True, "*fp16"),
    (0, 2, 1, False, "*fp32"),
    (32, 8, 128, False, "*fp16"),
]


def variants(all_configs: bool = False) -> Iterator[Variant]:
    q = quant_gemm
    tuned = {
        q._gemm_kernel: q._gemm_tuned,
        q._gemv_dequant_kernel: q._gemv_tuned,
        q._gemv_lut_kernel: q._lut_tuned,
    }
    # Without --all: the tiles with the most weights per thread, where spills would show.
    fixed = {
        q._gemm_kernel: [
            ({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "SPLIT_K": 4}, 8, 3),
            ({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "SPLIT_K": 1}, 4, 3),
        ],
        q._gemv_dequant_kernel: [
            ({"BLOCK_N": 32, "BLOCK_K": 256, "SPLIT_K": 8}, 8, 3),
            ({"BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 1}, 4, 3),
        ],
        q._gemv_lut_kernel: [({"BLOCK_N": 256, "BLOCK_K": 32, "SPLIT_K": 8}, 4, 3)],
    }
    for kernel, space in tuned.items():
        lut = kernel is q._gemv_lut_kernel
        if all_configs:
            configs = [(dict(c.kwargs), c.num_warps, c.num_stages) for c in space.configs]
        else:
            configs = fixed[kernel]
        for (gs, bits, zero, has_min, scale), (cfg, warps, stages) in itertools.product(
            _FORMATS, configs
        ):
            if lut and bits == 8:
                continue
            if kernel is q._gemm_kernel and not q.gemm_tile_allowed(
                bits, cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
            ):
                continue  # the autotuner prunes it
            consts = {"GS": gs, "BITS": bits, "ZERO": zero, "HAS_MIN": has_min, **cfg}
            yield Variant(kernel, _gemm_types(lut, scale), consts, warps, stages)
    for bits in (2, 4):
        yield Variant(
            q._lut_build_kernel,
            {"x_ptr": "*fp32", "lut_ptr": "*fp32", "K": "i32", "NBYTES": "i32", "stride_xm": "i32"},
            {"BITS": bits, "BLOCK_B": 16},
        )
    a = attention
    yield Variant(
        a._write_kv_kernel,
        {
            "qkv_ptr": "*fp32",
            "slot_ptr": "*i32",
            "kc_ptr": "*fp16",
            "vc_ptr": "*fp16",
            **{k: "i32" for k in ("stride_t", "K_OFF", "V_OFF", "KVW")},
        },
        {"BLOCK": 1024},
    )
    dec_types = {
        "q_ptr": "*fp32",
        "kc_ptr": "*fp16",
        "vc_ptr": "*fp16",
        "bt_ptr": "*i32",
        "ctx_ptr": "*i32",
        "seq_ptr": "*i32",
        "tok_ptr": "*i32",
        "out_ptr": "*fp32",
        "mp_ptr": "*fp32",
        "lp_ptr": "*fp32",
        "op_ptr": "*fp32",
        "scale": "fp32",
        **{
            k: "i32"
            for k in (
                "stride_q",
                "stride_bt",
                "stride_o",
                "H",
                "KV",
                "G",
                "HD",
                "BS",
                "SPLIT_TOKENS",
                "NUM_SPLITS",
            )
        },
    }
    for hd, split in ((64, False), (128, True)):
        consts = {"BLOCK_H": 16, "BLOCK_N": 64, "BLOCK_D": hd, "SPLIT": split}
        yield Variant(a._decode_kernel, dec_types, consts, a.ATTENTION_WARPS)
    yield Variant(
        a._reduce_kernel,
        {
            "mp_ptr": "*fp32",
            "lp_ptr": "*fp32",
            "op_ptr": "*fp32",
            "tok_ptr": "*i32",
            "out_ptr": "*fp32",
            **{k: "i32" for k in ("stride_o", "H", "HD", "NUM_SPLITS")},
        },
        {"BLOCK_S": 32, "BLOCK_D": 128},
    )
    pre_types = {
        "q_ptr": "*fp32",
        "kc_ptr": "*fp16",
        "vc_ptr": "*fp16",
        "bt_ptr": "*i32",
        "ctx_ptr": "*i32",
        "cu_ptr": "*i32",
        "tseq_ptr": "*i32",
        "tstart_ptr": "*i32",
        "out_ptr": "*fp32",
        "scale": "fp32",
        **{k: "i32" for k in ("stride_q", "stride_bt", "stride_o", "KV", "G", "HD", "BS")},
    }
    for hd in (64, 128):
        consts = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": hd}
        yield Variant(a._prefill_kernel, pre_types, consts, a.ATTENTION_WARPS)
    lo = layer_ops
    norm_types = {
        "x_ptr": "*fp32",
        "r_ptr": "*fp32",
        "w_ptr": "*fp32",
        "y_ptr": "*fp32",
        "D": "i32",
        "eps": "fp32",
        "stride_x": "i32",
        "stride_r": "i32",
        "stride_y": "i32",
    }
    for add in (False, True):
        yield Variant(lo._rms_norm_kernel, norm_types, {"ADD": add, "BLOCK": 4096})
    for relu2 in (False, True):
        yield Variant(
            lo._gated_act_kernel,
            {
                "gu_ptr": "*fp32",
                "y_ptr": "*fp32",
                "F": "i32",
                "stride_gu": "i32",
                "stride_y": "i32",
            },
            {"RELU2": relu2, "BLOCK": 1024},
        )
    for inter in (False, True):
        yield Variant(
            lo._rope_kernel,
            {
                "x_ptr": "*fp32",
                "pos_ptr": "*i64",
                "cs_ptr": "*fp32",
                "stride_t": "i32",
                "HALF": "i32",
            },
            {"INTERLEAVED": inter, "BLOCK": 64},
        )


def compile_variant(v: Variant, arch: int) -> dict:
    """Compile one variant to a cubin; its resource use."""
    names = v.kernel.arg_names
    signature = {n: v.types[n] if n in v.types else "constexpr" for n in names}
    missing = [n for n in names if signature[n] == "constexpr" and n not in v.constants]
    if missing:
        raise ValueError(f"{v.kernel.__name__}: no type or value for {missing}")
    constexprs = {(names.index(n),): val for n, val in v.constants.items()}
    src = ASTSource(fn=v.kernel, signature=signature, constexprs=constexprs)
    k = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": v.num_warps, "num_stages": v.num_stages},
    )
    return {"variant": v.name, "shared": k.metadata.shared, **_resources(k.asm["cubin"])}


def _resources(cubin: bytes) -> dict:
    """Registers and stack (spill) bytes per thread, from cuobjdump (bundled with triton);
    empty when it is missing."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [tool, "--dump-resource-usage", f.name], capture_output=True, text=True
        )
    m = re.search(r"REG:(\d+) STACK:(\d+)", out.stdout)
    return {"regs": int(m.group(1)), "stack": int(m.group(2))} if m else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80, 90")
    ap.add_argument("--all", action="store_true", help="every autotune configuration too")
    args = ap.parse_args(argv)
    failed = 0
    for v in variants(args.all):
        try:
            r = compile_variant(v, args.arch)
        except Exception as e:  # report every failure, not just the first
            failed += 1
            print(f"FAIL {v.name}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            continue
        use = f"{r.get('regs', '?')} regs, {r.get('stack', '?')} B stack (spills)"
        print(f"ok   {r['variant']}: {use}, {r['shared']} B shared", flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
