"""Exit codes, the two errors a command raises to pick one, and the lines it prints on
stderr (stdout holds only the answer)."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNVERIFIED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

BASIC_EXIT_CODES_HELP = """exit codes:
  0    done
  1    error: the model could not be loaded, or the command failed while running
  2    usage error, found before loading the model (bad flag or value, missing file)"""
EXIT_CODES_HELP = BASIC_EXIT_CODES_HELP + "\n  130  interrupted (Ctrl-C)"

TASK_EXIT_CODES_HELP = """exit codes:
  0    verified: the tools accepted the answer
  1    failed: the tools rejected the answer; or an error (the model could not be loaded)
  2    usage error, found before loading the model: a bad flag, an input file, function
       or test path that does not exist, a tool the input needs
  3    unverified: no tests, or a verifier tool is missing (named in the report)
  130  interrupted (Ctrl-C)"""


class UsageError(Exception):
    """The command line is wrong (found before any model was loaded): exit 2."""


class CommandError(Exception):
    """The command failed once under way (the model did not load...): exit 1."""


def one_line(e: BaseException) -> str:
    # Some messages (the default model's install hint) span lines; a CLI error is one line.
    return " ".join(str(e).split()) or type(e).__name__


def note(message: str) -> None:
    """A progress line on stderr (stdout holds only the answer)."""
    print(f"lutlm: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"lutlm: warning: {message}", file=sys.stderr, flush=True)
