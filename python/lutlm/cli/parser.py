"""The `lutlm` parser, one subcommand per module of this package, and `main`, which runs
the chosen command and turns its errors into exit codes."""

from __future__ import annotations

import argparse
import sys

from lutlm.cli import generate, info, quantize, serve, tasks
from lutlm.cli.args import apply_threads
from lutlm.cli.errors import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    UsageError,
    one_line,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lutlm",
        description="Low-bit LLM inference: generate, chat, serve the OpenAI API, quantize,\n"
        "and compiler tasks checked by real tools.",
        epilog=EXIT_CODES_HELP + "\n\nRun `lutlm COMMAND --help` for a command's options.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lutlm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, epilog: str = EXIT_CODES_HELP) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=_HelpFormatter
        )

    for module in (info, generate, serve, quantize, tasks):
        module.add_commands(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # a first try: the commands, not an error
        parser.print_help()
        return EXIT_OK
    args = parser.parse_args(argv)
    try:
        apply_threads(args)
        return args.func(args)
    except UsageError as e:
        print(f"lutlm {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"lutlm: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, OSError) as e:  # from a library call: its message, one line
        print(f"lutlm: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nlutlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none or its help already says it; keeps
    the exit-code tables of the epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lutlm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from lutlm import __version__

        return __version__
