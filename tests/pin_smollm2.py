"""SmolLM2's greedy tokens and logprobs as lutlm gave them at a fixed commit: the pin that
restructuring (the engine, the decoder over backends, the weight-format table, the
kernels' bindings) must keep bit for bit.

    python -m tests.pin_smollm2 > tests/data/smollm2_pin.json   # only to re-pin, on purpose

The file records the commit it was made at. Regenerating it is a deliberate change of
numerics, to be justified in the commit that does it.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROMPTS = [
    ("chat", "What is the capital of France?"),
    ("chat", "Write a C function that returns the sum of 1 to n."),
    ("raw", "def fibonacci(n):\n    "),
]
MAX_TOKENS = 24
TOP = 3


def generate(act_bits: int) -> list[dict]:
    from lutlm import LLM, SamplingParams

    from .model_assets import smollm2_path

    llm = LLM(str(smollm2_path()), act_bits=act_bits)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, logprobs=TOP)
    chats = [[{"role": "user", "content": p}] for kind, p in PROMPTS if kind == "chat"]
    raws = [p for kind, p in PROMPTS if kind == "raw"]
    # Batched on purpose: the chats run together in one engine, as a server would.
    outs = llm.chat(chats, params) + llm.generate(raws, params)
    return [
        {
            "token_ids": o.outputs[0].token_ids,
            "logprobs": [lp for lp, _ in o.outputs[0].logprobs],
            "top": [[[t, v] for t, v in top] for _, top in o.outputs[0].logprobs],
        }
        for o in outs
    ]


def main() -> int:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    pin = {
        "commit": commit,
        "prompts": PROMPTS,
        "max_tokens": MAX_TOKENS,
        "act_bits": {str(a): generate(a) for a in (16, 8)},
    }
    json.dump(pin, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
