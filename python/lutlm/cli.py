"""The ``lutlm`` command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from lutlm import _C
    from lutlm.info import cpu_info, format_cpu_info

    if args.isa:
        _C.set_isa(args.isa)
    if args.threads:
        _C.set_num_threads(args.threads)
    info = cpu_info()
    print(json.dumps(info, indent=2) if args.json else format_cpu_info(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lutlm", description="Low-bit LLM inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show CPU features, threads and kernel paths")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--isa", help="force a kernel ISA (scalar, avx2, neon)")
    info.add_argument("--threads", type=int, help="thread count")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"lutlm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
