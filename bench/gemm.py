#!/usr/bin/env python3
"""Kernel microbenchmark: ternary and INT4 GEMM (LUT vs MAD) against numpy fp32.

    python bench/gemm.py --quick --out /tmp/quick.md
    python bench/gemm.py --out bench/gemm.md --json bench/gemm.json

Weights are random normal, quantized once per shape (ternary absmean; INT4 group 32,
symmetric); the numpy baseline is ``x @ W_deq.T`` in fp32. GEMV "from DRAM" rotates
M=1 calls round-robin over copies of the packed weight whose total exceeds --llc-bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import glob
import json
import math
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import lutlm
from lutlm import _C
from lutlm.quant import quantize_int4, quantize_ternary

SHAPES: dict[str, list[tuple[int, int]]] = {  # (N, K): output rows x input dim
    "SmolLM2-135M": [(576, 576), (1536, 576), (576, 1536), (49152, 576)],
    "BitNet-b1.58-2B-4T": [(2560, 2560), (6912, 2560), (2560, 6912)],
    "Llama-2-7B": [(4096, 4096), (11008, 4096), (4096, 11008)],
}
QUICK_SHAPES = "576x1536,2560x6912,4096x11008"
TYPES = ("ternary", "int4")
METHODS = ("lut", "mad")
DRAM_MIN_ELEMS = 2560 * 2560  # GEMV from DRAM only for the BitNet and Llama shapes
MEM_CAP = 4 << 30
Row = dict[str, Any]


def parse_bytes(s: str) -> int:
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def default_working_set() -> tuple[int, str]:
    """2x the highest-level cache of cpu0 (sysfs), capped at MEM_CAP."""
    best = (0, 0)
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(f"{d}/level") as f1, open(f"{d}/size") as f2:
                best = max(best, (int(f1.read()), parse_bytes(f2.read())))
        except (OSError, ValueError):
            continue
    if not best[1]:
        return 1 << 30, "LLC size unknown: 1 GiB"
    return min(2 * best[1], MEM_CAP), f"2 x L{best[0]} ({best[1] >> 20} MiB), cap 4 GiB"


def blas_thread_setter() -> tuple[Callable[[int], object], str]:
    """A function setting numpy's BLAS thread count, and how it does so."""
    try:
        from threadpoolctl import threadpool_limits  # applies the limit on construction

        return (lambda n: threadpool_limits(limits=n, user_api="blas")), "threadpoolctl"
    except ImportError:
        pass
    try:  # OpenBLAS loaded by numpy: call its setter directly, as threadpoolctl does
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        libs = []
    names = (
        "openblas_set_num_threads",
        "openblas_set_num_threads64_",
        "scipy_openblas_set_num_threads64_",
        "scipy_openblas_set_num_threads_64_",
    )
    for lib in libs:
        for name in names:
            fn = getattr(ctypes.CDLL(lib), name, None)
            if fn is not None:
                return fn, f"no threadpoolctl; ctypes {name}() in {lib.rsplit('/', 1)[-1]}"
    return (lambda n: None), "NOT controlled (no threadpoolctl, no OpenBLAS): numpy default"


def parse_shapes(spec: str) -> list[tuple[str, int, int]]:
    out = []
    for tok in (t.strip() for t in spec.split(",") if t.strip()):
        model = next((m for m in SHAPES if m.lower().startswith(tok.lower())), None)
        if model:
            out += [(model, n, k) for n, k in SHAPES[model]]
            continue
        n, k = (int(v) for v in tok.lower().split("x"))
        out.append((next((m for m, s in SHAPES.items() if (n, k) in s), "custom"), n, k))
    return out


def copy_weight(w: Any) -> Any:
    """Same packed weight in fresh memory (copies of the arrays, no re-quantization)."""
    return dataclasses.replace(
        w,
        **{
            f.name: v.copy()
            for f in dataclasses.fields(w)
            if isinstance(v := getattr(w, f.name), np.ndarray)
        },
    )


def measure(
    fn: Callable[[], object], args: argparse.Namespace, predicted: float | None
) -> tuple[float | None, int, str]:
    """(median seconds, runs, skip reason): warm-up, then >= min_runs and >= min_time."""
    budget = args.max_seconds_per_case
    if predicted is not None and predicted > budget:
        return None, 0, f"predicted {predicted:.3g} s/run (linear in M) > {budget} s"
    t0 = time.perf_counter()
    fn()
    if (warm := time.perf_counter() - t0) > budget:
        return None, 1, f"single run {warm:.3g} s > {budget} s"
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < args.min_runs or time.perf_counter() - start < args.min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times), ""


def rotate(fns: list[Callable[[], object]], args: argparse.Namespace) -> tuple[float, int]:
    """Median per-call seconds over full round-robin passes (one warm-up pass first)."""
    for f in fns:
        f()
    per_call: list[float] = []
    start = time.perf_counter()
    while len(per_call) < args.min_runs or time.perf_counter() - start < args.min_time:
        t = time.perf_counter()
        for f in fns:
            f()
        per_call.append((time.perf_counter() - t) / len(fns))
    return statistics.median(per_call), len(per_call)


def run_shape(
    model: str,
    N: int,
    K: int,
    args: argparse.Namespace,
    set_threads: Callable[[int], None],
    bw: dict[int, float],
    rows: list[Row],
    dram: list[Row],
    errors: dict[str, float],
) -> None:
    rng = np.random.default_rng(args.seed)
    w_fp = rng.standard_normal((N, K), dtype=np.float32)
    quant = {"ternary": quantize_ternary, "int4": lambda w: quantize_int4(w, 32, True)}
    weights = {t: quant[t](w_fp) for t in args.types}
    del w_fp
    deq = {t: w.dequantize() for t, w in weights.items()}
    base = deq[args.types[0]]  # fp32 cost does not depend on the values
    x = rng.standard_normal((3, K), dtype=np.float32)
    for t, w in weights.items():  # sanity check against the dequantized fp32 product
        ref = x @ deq[t].T
        for meth in METHODS:
            err = float(np.abs(w.matmul(x, meth) - ref).max() / np.abs(ref).max())
            errors[f"{N}x{K} {t} {meth}"] = err
    shape = f"{N}x{K}"
    last: dict[tuple[str, str, int], tuple[int, float]] = {}
    for th in args.threads:
        set_threads(th)
        for M in args.m:
            x = rng.standard_normal((M, K), dtype=np.float32)
            cases = [("fp32", "numpy", partial(np.matmul, x, base.T), base.nbytes)]
            cases += [
                (t, m, partial(weights[t].matmul, x, m), weights[t].nbytes)
                for t in args.types
                for m in METHODS
            ]
            for typ, meth, fn, nbytes in cases:
                prev = last.get((typ, meth, th))
                pred = prev[1] * M / prev[0] if prev else None
                sec, runs, skip = measure(fn, args, pred)
                row: Row = dict(
                    model=model,
                    shape=shape,
                    N=N,
                    K=K,
                    type=typ,
                    method=meth,
                    M=M,
                    threads=th,
                    weight_bytes=nbytes,
                    runs=runs,
                    time_s=sec,
                    gops=None,
                    weight_gbps=None,
                    skipped=skip or None,
                )
                if sec is not None:
                    last[(typ, meth, th)] = (M, sec)
                    row.update(gops=2 * M * N * K / sec / 1e9, weight_gbps=nbytes / sec / 1e9)
                rows.append(row)
                print(
                    f"  {shape} t={th} M={M:<4} {typ:>7} {meth:<5} "
                    + (f"{sec * 1e3:10.3f} ms" if sec else f"skipped: {skip}"),
                    file=sys.stderr,
                    flush=True,
                )
    if args.no_dram or 1 not in args.m or N * K < DRAM_MIN_ELEMS:
        return
    x1 = rng.standard_normal((1, K), dtype=np.float32)
    variants: list[tuple[str, Any, tuple[str, ...]]] = [("fp32", base, ("numpy",))]
    variants += [(t, weights[t], METHODS) for t in args.types]
    for typ, w, meths in variants:
        n = args.llc_bytes // w.nbytes + 1
        copies = [w] + [w.copy() if typ == "fp32" else copy_weight(w) for _ in range(n - 1)]
        for th in args.threads:
            set_threads(th)
            for meth in meths:
                fns = [
                    partial(np.matmul, x1, c.T) if typ == "fp32" else partial(c.matmul, x1, meth)
                    for c in copies
                ]
                sec, runs = rotate(fns, args)
                gbps = w.nbytes / sec / 1e9
                dram.append(
                    dict(
                        model=model,
                        shape=shape,
                        N=N,
                        K=K,
                        type=typ,
                        method=meth,
                        threads=th,
                        copies=n,
                        working_set_bytes=n * w.nbytes,
                        weight_bytes=w.nbytes,
                        runs=runs,
                        time_s=sec,
                        weight_gbps=gbps,
                        gops=2 * N * K / sec / 1e9,
                        bw_fraction=gbps / bw[th],
                    )
                )
                print(
                    f"  DRAM {shape} t={th} {typ:>7} {meth:<5} {sec * 1e3:8.3f} ms "
                    f"{gbps:6.1f} GB/s ({n} copies)",
                    file=sys.stderr,
                    flush=True,
                )
        del copies, fns


def fmt_ms(sec: float) -> str:
    ms = sec * 1e3
    return (
        f"{ms:.4f}"
        if ms < 1
        else f"{ms:.3f}"
        if ms < 10
        else f"{ms:.2f}"
        if ms < 100
        else f"{ms:.1f}"
    )


def table(header: list[str], body: list[list[str]]) -> list[str]:
    return (
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in body]
        + [""]
    )


def render(
    meta: dict[str, Any],
    bw: dict[int, float],
    rows: list[Row],
    dram: list[Row],
    errors: dict[str, float],
    args: argparse.Namespace,
) -> str:
    ci = meta["cpu"]
    out = [
        "# lutlm GEMM microbenchmark",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- cpu: {ci['model']} ({ci['arch']}), {ci['physical_cores']} physical / "
        f"{ci['logical_cpus']} logical cores; kernel ISA {ci['isa']} "
        f"(available: {', '.join(ci['available_isas'])})",
        f"- features: {' '.join(ci['features'])}",
        f"- platform: {meta['platform']}; Python {meta['python']}; numpy {meta['numpy']}; "
        f"lutlm {meta['lutlm']}",
        f"- numpy BLAS threads: {meta['blas_threads']}",
        f"- method 'auto' picks lut for ternary M <= {meta['lut_max_m']['ternary']}, "
        f"int4 M <= {meta['lut_max_m']['int4']}",
        f"- timing: median of >= {args.min_runs} runs and >= {args.min_time} s after a "
        f"warm-up, through the Python API; GOPS = 2*M*N*K/time; weights: random normal, "
        f"ternary absmean, INT4 group 32 symmetric; budget {args.max_seconds_per_case} s/run",
        "- max relative error vs fp32 on the dequantized weights (M=3): "
        + ", ".join(
            f"{k} {max(e for n, e in errors.items() if n.endswith(k)):.1e}"
            for k in dict.fromkeys(n.split(" ", 1)[1] for n in errors)
        ),
        "",
        "## Read bandwidth probe",
        "",
    ]
    out += table(
        ["threads", "buffer (MiB)", "GB/s"],
        [[str(t), str(meta["probe_bytes"] >> 20), f"{g:.1f}"] for t, g in bw.items()],
    )
    idx = {(r["shape"], r["threads"], r["M"], r["type"], r["method"]): r for r in rows}
    cols = [("fp32", "numpy")] + [(t, m) for t in args.types for m in METHODS]

    def sec(shape: str, th: int, M: int, typ: str, meth: str) -> float | None:
        r = idx.get((shape, th, M, typ, meth))
        return r["time_s"] if r else None

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    out += [
        "## GEMM: time (ms) / GOPS",
        "",
        "Speedups are time ratios: lut/mad = mad time / lut time, lut/numpy = numpy fp32 "
        "time / lut time (> 1: lut faster). GB/s of packed weights are in the JSON.",
        "",
    ]
    shapes = list(dict.fromkeys((r["model"], r["shape"]) for r in rows))
    for model, shape in shapes:
        for th in args.threads:
            head = ["M"] + [f"{t} {m}" for t, m in cols]
            head += [f"{t} lut/{m}" for t in args.types for m in ("mad", "numpy")]
            body = []
            for M in args.m:
                cells = [str(M)]
                for t, m in cols:
                    r = idx[(shape, th, M, t, m)]
                    cells.append(
                        f"{fmt_ms(r['time_s'])} / {r['gops']:.1f}" if r["time_s"] else "skipped"
                    )
                for t in args.types:
                    lut = sec(shape, th, M, t, "lut")
                    cells += [
                        ratio(sec(shape, th, M, t, "mad"), lut),
                        ratio(sec(shape, th, M, "fp32", "numpy"), lut),
                    ]
                body.append(cells)
            out += [f"### {model} {shape}, {th} thread{'s' * (th > 1)}", ""] + table(head, body)

    def crossover(shape_list: list[str], typ: str, th: int) -> str:
        for M in sorted(args.m):  # geometric mean of mad/lut time ratios over the shapes
            rs = [
                math.log(m / lt)
                for s in shape_list
                if (lt := sec(s, th, M, typ, "lut")) and (m := sec(s, th, M, typ, "mad"))
            ]
            if rs and sum(rs) < 0:
                return str(M)
        return f"none up to {max(args.m)}"

    out += ["## LUT/MAD crossover: smallest M at which mad beats lut", ""]
    keys = [(t, th) for t in args.types for th in args.threads]
    body = [[f"{m} {s}"] + [crossover([s], t, th) for t, th in keys] for m, s in shapes]
    body.append(
        ["all shapes (geomean)"] + [crossover([s for _, s in shapes], t, th) for t, th in keys]
    )
    out += table(["shape"] + [f"{t}, {th} thr" for t, th in keys], body)
    if dram:
        out += [
            "## GEMV (M=1) from DRAM: weights round-robin over copies",
            "",
            f"Working set > {args.llc_bytes >> 20} MiB ({meta['llc_source']}); "
            "GB/s of weight bytes (packed, or fp32 for numpy) per call; "
            "fraction of the read bandwidth probe at the same thread count.",
            "",
        ]
        out += table(
            [
                "shape",
                "type",
                "method",
                "threads",
                "copies",
                "ms/call",
                "GOPS",
                "GB/s",
                "of read BW",
            ],
            [
                [
                    r["shape"],
                    r["type"],
                    r["method"],
                    str(r["threads"]),
                    str(r["copies"]),
                    fmt_ms(r["time_s"]),
                    f"{r['gops']:.1f}",
                    f"{r['weight_gbps']:.1f}",
                    f"{100 * r['bw_fraction']:.0f}%",
                ]
                for r in dram
            ],
        )
    skipped = [r for r in rows if r["skipped"]]
    out += ["## Skipped cases", ""]
    out += [
        f"- {r['shape']} {r['type']} {r['method']} M={r['M']} threads={r['threads']}: "
        f"{r['skipped']}"
        for r in skipped
    ] or ["none"]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"shapes {QUICK_SHAPES}, M 1,128, min-time 0.05 s, min-runs 2",
    )
    p.add_argument(
        "--shapes",
        help=f"comma list of NxK or model names ({', '.join(SHAPES)}; prefixes ok); default all",
    )
    p.add_argument("--m", help="comma list of batch sizes M (default 1,8,32,128,512)")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts")
    p.add_argument("--types", default=",".join(TYPES), help="ternary,int4")
    p.add_argument("--min-time", type=float, help="seconds of timed runs per case (0.2)")
    p.add_argument("--min-runs", type=int, help="timed runs per case at least (3)")
    p.add_argument(
        "--max-seconds-per-case",
        type=float,
        default=10.0,
        help="skip a case whose single run takes (or is predicted to take) longer",
    )
    p.add_argument(
        "--llc-bytes",
        type=parse_bytes,
        help="DRAM GEMV working set / probe size, e.g. 960M (default 2 x LLC, <= 4G)",
    )
    p.add_argument("--no-dram", action="store_true", help="skip the GEMV-from-DRAM mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the markdown report here")
    p.add_argument("--json", help="write all measurements here as JSON")
    args = p.parse_args()
    args.shapes = parse_shapes(args.shapes or (QUICK_SHAPES if args.quick else ",".join(SHAPES)))
    args.m = [int(v) for v in (args.m or ("1,128" if args.quick else "1,8,32,128,512")).split(",")]
    args.threads = [int(v) for v in args.threads.split(",")]
    args.types = [t for t in TYPES if t in args.types.split(",")]
    args.min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.2)
    args.min_runs = args.min_runs or (2 if args.quick else 3)
    llc_source = "--llc-bytes"
    if args.llc_bytes is None:
        args.llc_bytes, llc_source = default_working_set()

    blas_set, blas_how = blas_thread_setter()

    def set_threads(n: int) -> None:
        _C.set_num_threads(n)
        blas_set(n)

    t_start = time.perf_counter()
    bw: dict[int, float] = {}
    for th in args.threads:
        set_threads(th)
        bw[th] = _C.read_bandwidth(max(args.llc_bytes, 1 << 20), 3)
        print(f"read bandwidth, {th} threads: {bw[th]:.1f} GB/s", file=sys.stderr)
    rows: list[Row] = []
    dram: list[Row] = []
    errors: dict[str, float] = {}
    for model, N, K in args.shapes:
        print(f"{model} {N}x{K}", file=sys.stderr, flush=True)
        run_shape(model, N, K, args, set_threads, bw, rows, dram, errors)
    info = lutlm.cpu_info()
    meta = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command=shlex.join(["python", *sys.argv]),
        cpu=info,
        platform=platform.platform(),
        python=platform.python_version(),
        numpy=np.__version__,
        lutlm=lutlm.__version__,
        blas_threads=blas_how,
        lut_max_m=_C.cpu_info()["lut_max_m"],
        probe_bytes=max(args.llc_bytes, 1 << 20),
        llc_source=llc_source,
        runtime_s=round(time.perf_counter() - t_start, 1),
    )
    report = render(meta, bw, rows, dram, errors, args)
    report += f"\nTotal benchmark time: {meta['runtime_s']} s\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(meta=meta, read_bandwidth_gbps=bw, errors=errors, results=rows, dram=dram),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
