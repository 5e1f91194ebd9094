"""The public API and CLI on the default model (SmolLM2-135M-Instruct)."""

import subprocess
import sys

import pytest

from lutlm import LLM, SamplingParams

from .model_assets import smollm2_path

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm():
    smollm2_path()  # skip or fail with the install hint when the wheel is missing
    return LLM()


def test_chat_names_paris(llm):
    out = llm.chat(QUESTION, SamplingParams(max_tokens=30, temperature=0))[0]
    assert "Paris" in out.text
    assert out.finish_reason == "stop"  # ended by <|im_end|>, not by the length limit


def test_generate_batch_and_stop_string(llm):
    params = SamplingParams(max_tokens=40, temperature=0)
    prompts = ["def fibonacci(n):", "The three primary colors are"]
    outs = llm.generate(prompts, params)
    assert [o.prompt for o in outs] == prompts
    assert all(o.token_ids and o.text for o in outs)
    alone = llm.generate(prompts[1], params)[0]
    assert alone.token_ids == outs[1].token_ids  # batching does not change greedy output
    cut = llm.generate(prompts[0], SamplingParams(max_tokens=40, temperature=0, stop=["return"]))
    assert "return" not in cut[0].text and cut[0].finish_reason == "stop"
    assert outs[0].text.startswith(cut[0].text)


def test_cli_generate_streams_the_answer():
    smollm2_path()
    args = ["generate", "--chat", "--max-tokens", "30", "What is the capital of France?"]
    runs = [
        subprocess.run(
            [sys.executable, "-m", "lutlm.cli", *args, *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        for extra in ([], ["--prompt-lookup", "8"])
    ]
    for out in runs:
        assert out.returncode == 0, out.stderr
    assert "Paris" in runs[0].stdout
    assert runs[1].stdout == runs[0].stdout  # drafting changes speed, not tokens


def test_cli_device_cuda_without_a_gpu_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = subprocess.run(
        [sys.executable, "-m", "lutlm.cli", "generate", "hi", "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "--device cuda" in out.stderr and "Traceback" not in out.stderr


def test_cli_reports_a_missing_model(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lutlm.cli", "generate", "hi", "--model", str(tmp_path / "x.gguf")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1  # a model that does not load: exit 1 (2 is a usage error)
    assert "no such model file" in out.stderr and "Traceback" not in out.stderr
