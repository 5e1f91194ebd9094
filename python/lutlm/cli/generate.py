"""`lutlm generate` and `lutlm chat`: text streamed as it is generated; Ctrl-C stops an
answer between engine steps."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from lutlm.cli.args import AddCommand, device_arg, model_args, sampling_flags
from lutlm.cli.errors import (
    BASIC_EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandError,
    UsageError,
)
from lutlm.cli.load import load_llm

if TYPE_CHECKING:
    from lutlm.engine.sampling_params import SamplingParams
    from lutlm.llm import LLM


def add_commands(command: AddCommand) -> None:
    gen = command(
        "generate",
        "complete a prompt, streaming the text",
        BASIC_EXIT_CODES_HELP + "\n  130  Ctrl-C stopped the answer",
    )
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    model_args(gen)
    device_arg(gen)
    gen.set_defaults(func=_cmd_generate)

    chat = command(
        "chat",
        "interactive chat, streaming the answers",
        BASIC_EXIT_CODES_HELP
        + "\n\nCtrl-C stops an answer; at the prompt, Ctrl-C, Ctrl-D or an empty "
        "line quits (exit 0).",
    )
    chat.add_argument("--system", help="system message")
    model_args(chat)
    device_arg(chat)
    chat.set_defaults(func=_cmd_chat)


def _sampling(args: argparse.Namespace) -> SamplingParams:
    from lutlm.engine.sampling_params import SamplingParams

    try:
        return SamplingParams(**sampling_flags(args))
    except ValueError as e:
        raise UsageError(str(e)) from None


class _StopOnInterrupt:
    """Ctrl-C while an answer streams: the first press asks the loop to stop the answer,
    which it does between engine steps (so the engine is never left mid-step); a second
    press before that raises KeyboardInterrupt, for a step that never ends."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps
        # its default meaning.
        self._active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self) -> _StopOnInterrupt:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)


def stream(
    llm: LLM, prompt_ids: list[int], params: SamplingParams, out: TextIO | None = None
) -> tuple[list[int], bool]:
    """Generate for one prompt, printing text as it completes.

    Returns the new ids and whether Ctrl-C stopped the answer; a stopped request is
    aborted, so its KV-cache blocks are free for the next one.
    """
    out = out if out is not None else sys.stdout
    engine = llm.engine
    rid = engine.add_request(prompt_ids, params)
    ids: list[int] = []
    finished = False
    with _StopOnInterrupt() as stop:
        while engine.has_unfinished() and not stop.pressed:
            for step in engine.step():
                if step.request_id == rid:
                    ids += step.new_token_ids
                    finished = finished or step.finished
                    out.write(step.new_text)
                    out.flush()
        engine.pop_finished()
        out.write("\n")
        out.flush()
        if finished:  # also when Ctrl-C came with the last token: the answer is whole
            return ids, False
        engine.abort(rid)
        return ids, True


def _cmd_generate(args: argparse.Namespace) -> int:
    params = _sampling(args)
    llm = load_llm(args)
    if args.chat:
        text = llm.tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}])
        ids = llm.tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = llm.tokenizer.encode(args.prompt)
    try:
        _, stopped = stream(llm, ids, params)
    except ValueError as e:  # the engine refused the request (prompt longer than the context)
        raise CommandError(str(e)) from None
    return EXIT_INTERRUPTED if stopped else EXIT_OK


def _cmd_chat(args: argparse.Namespace) -> int:
    params = _sampling(args)
    llm = load_llm(args)
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print(
        "lutlm chat: Ctrl-C stops an answer; an empty line, Ctrl-D or Ctrl-C at the prompt quits",
        file=sys.stderr,
    )
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()  # leave the terminal on a fresh line
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        text = llm.tokenizer.apply_chat_template(messages)
        try:
            ids, stopped = stream(llm, llm.tokenizer.encode(text, add_special_tokens=False), params)
        except ValueError as e:  # e.g. the conversation outgrew the context: say so, go on
            print(f"lutlm: {e}", file=sys.stderr)
            messages.pop()
            continue
        # A stopped answer stays in the conversation as far as it was shown.
        messages.append({"role": "assistant", "content": llm.tokenizer.decode(ids)})
        if stopped:
            print("(stopped)", file=sys.stderr)
    return EXIT_OK
