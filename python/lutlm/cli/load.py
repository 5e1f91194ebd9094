"""Loading the model a command names (or the default model), with its options."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lutlm.cli.args import formats
from lutlm.cli.errors import CommandError, UsageError, one_line, warn
from lutlm.cli.errors import note as note_on_stderr

if TYPE_CHECKING:
    from lutlm.llm import LLM


def warn_fixed_formats(model: str | None, args: argparse.Namespace) -> None:
    """A packed directory's formats were chosen by `lutlm quantize`; say that flags asking
    for others change nothing."""
    from lutlm.formats.packed import is_packed

    if model is None or not is_packed(model):
        return
    given = [f"--{flag} {v}" for flag in ("weights", "head") if (v := getattr(args, flag))]
    if given:
        warn(
            f"{' and '.join(given)} ignored: {model} is a `lutlm quantize` output, whose "
            "weights and head were fixed when it was written (quantize the source again "
            "to change them)"
        )


def device_of(args: argparse.Namespace) -> str:
    """--device resolved ("auto" -> "cpu" or "cuda"); a device that cannot run is a usage error."""
    from lutlm.backends import resolve_device

    try:
        return resolve_device(args.device)
    except (RuntimeError, ValueError) as e:  # no GPU stack or no GPU: fix the command
        raise UsageError(str(e)) from None


def _model_name(model: str | None) -> str:
    return model if model is not None else "the default model (SmolLM2-135M-Instruct)"


def load_llm(args: argparse.Namespace, *, note: Any = None, **engine: Any) -> LLM:
    """The LLM of --model (or the default model), loaded with the command's options.

    Raises CommandError with the loader's message (one line) when it cannot be loaded.
    note: prints the progress lines (default: on stderr, prefixed "lutlm:").
    engine: LLM's engine options (max_model_len, kv_cache_memory_gb, max_num_seqs).
    """
    note = note or note_on_stderr
    from lutlm.llm import LLM

    device = device_of(args)
    weights, head = formats(args)
    warn_fixed_formats(args.model, args)
    note(f"loading {_model_name(args.model)} ...")
    start = time.monotonic()
    try:
        llm = LLM(
            args.model, weights=weights, head=head, act_bits=args.act_bits, device=device, **engine
        )
    except (ValueError, OSError) as e:  # the loaders' messages name the file and the problem
        raise CommandError(one_line(e)) from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # a file the loaders did not anticipate: still one line
        raise CommandError(
            f"{args.model or 'the default model'}: cannot be loaded "
            f"({type(e).__name__}: {one_line(e)})"
        ) from None
    note(f"loaded {Path(llm.model_path).name} in {time.monotonic() - start:.1f} s")
    return llm
