"""`lutlm info`: CPU features, threads and the kernel path of each operation."""

from __future__ import annotations

import argparse

from lutlm.cli.args import AddCommand, threads_arg
from lutlm.cli.errors import EXIT_OK, UsageError


def add_commands(command: AddCommand) -> None:
    info = command("info", "show CPU features, threads and kernel paths")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--isa", help="force a kernel ISA (scalar, avx2, avx512, neon)")
    info.add_argument("--threads", type=threads_arg, help="thread count")
    info.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from lutlm import _C
    from lutlm.info import cpu_info, format_cpu_info

    if args.isa:
        try:
            _C.set_isa(args.isa)
        except ValueError as e:
            raise UsageError(str(e)) from None
    info = cpu_info()
    print(json.dumps(info, indent=2) if args.json else format_cpu_info(info))
    return EXIT_OK
