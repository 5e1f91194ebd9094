"""The ``lutlm`` command line: parser.py builds the parser and runs a command; each command
lives in its own module (info, generate (and chat), serve, quantize, tasks), on top of the
shared argument types (args.py), model loading (load.py) and exit codes (errors.py).

Every command checks its arguments (flags, input files, the function, test paths, tools)
before it loads a model, so that a typo costs a second, not a model load. Exit codes:

- 0: done (task commands: the answer was verified);
- 1: an error once the command was under way: the model could not be loaded (a missing,
  unreadable or unsupported file; the default model not installed) or something failed
  while it ran; for the task commands also an answer the tools rejected ("failed");
- 2: a usage error, found before any model was loaded: an unknown flag or a bad value,
  an input file, function or test path that does not exist, a tool the input needs, a
  bad LUTLM_NUM_THREADS, a port already in use;
- 3: task commands: the answer could not be checked ("unverified": no tests, or a
  verifier tool is missing);
- 130: `lutlm generate` stopped by Ctrl-C (`lutlm chat` ends with 0: Ctrl-C there stops
  the answer, and at the prompt it quits, like Ctrl-D or an empty line).
"""

from lutlm.cli.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    CommandError,
    UsageError,
)
from lutlm.cli.parser import build_parser, main

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNVERIFIED",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "build_parser",
    "main",
]
