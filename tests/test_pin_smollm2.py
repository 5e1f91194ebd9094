"""SmolLM2's greedy tokens, logprobs and top logprobs are bit-identical to the pinned run
(tests/data/smollm2_pin.json, made by tests/pin_smollm2.py at the commit it names), at
act_bits 16 and 8: restructuring the engine, the decoder or the kernels' bindings must
not move a single bit."""

import json
from pathlib import Path

import pytest

from .model_assets import smollm2_path
from .pin_smollm2 import generate

PIN = json.loads((Path(__file__).parent / "data" / "smollm2_pin.json").read_text())


@pytest.mark.parametrize("act_bits", [16, 8])
def test_smollm2_matches_the_pin_bit_for_bit(act_bits):
    smollm2_path()  # skips (or, in CI, fails) when the model is missing
    got = generate(act_bits)
    want = PIN["act_bits"][str(act_bits)]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g["token_ids"] == w["token_ids"], f"prompt {i}: tokens differ from {PIN['commit']}"
        assert g["logprobs"] == w["logprobs"], f"prompt {i}: logprobs differ from {PIN['commit']}"
        assert g["top"] == w["top"], f"prompt {i}: top logprobs differ from {PIN['commit']}"
