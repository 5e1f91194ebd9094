"""The engine on SmolLM2: greedy output against transformers, batching, preemption."""

import pytest

from lutlm.engine.engine import LLMEngine
from lutlm.engine.errors import InvalidRequest
from lutlm.engine.sampling_params import SamplingParams
from lutlm.model import load_model

from .model_assets import smollm2_path, transformers_module

PROMPTS = [
    [1, 504, 3458, 282, 4649, 314, 253, 1345, 281],
    [1, 378, 2023, 282, 260, 1345, 314, 2398, 28, 284, 260],
    [1, 5248, 2657, 1093, 327],
]


@pytest.fixture(scope="module")
def model16():
    # A row's numbers do not depend on the other rows of its batch (the model's INT4 and
    # INT8 layers run the MAD kernels at every batch size), and act_bits=16 is within
    # ~4e-5 of exact, so greedy tokens survive batching, chunking and preemption.
    return load_model(smollm2_path(), act_bits=16)


def run(engine, prompts, params):
    rids = [engine.add_request(p, params) for p in prompts]
    steps, done = 0, {}
    while engine.has_unfinished():
        engine.step()
        steps += 1
        done.update((o.request_id, o) for o in engine.pop_finished())
    return [done[r].token_ids for r in rids], steps


def test_greedy_matches_transformers(model16):
    transformers = transformers_module()
    import torch

    path = smollm2_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    engine = LLMEngine(model16, [2], num_blocks=64)
    ours, _ = run(
        engine, PROMPTS[:2], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    )
    for prompt, got in zip(PROMPTS[:2], ours, strict=True):
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([prompt]), max_new_tokens=24, do_sample=False, min_new_tokens=24
            )[0, len(prompt) :].tolist()
        same = next((i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b), len(ref))
        assert same >= 16, (got, ref)
        if same < len(ref):
            # A later divergence is allowed only at a near-tie of the reference's logits
            # (lutlm keeps K/V in fp16, the reference in fp32).
            with torch.no_grad():
                lg = hf(torch.tensor([prompt + ref[:same]])).logits[0, -1]
            assert float(lg[ref[same]] - lg[got[same]]) < 0.1


def test_batched_equals_alone_and_preemption_loses_nothing(model16):
    params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    alone = [run(LLMEngine(model16, [2], num_blocks=64), [p], params)[0][0] for p in PROMPTS]
    batched, _ = run(LLMEngine(model16, [2], num_blocks=64), PROMPTS, params)
    assert batched == alone
    # 3 requests of up to 51 tokens need 10 blocks; with 7, decode must preempt.
    small = LLMEngine(model16, [2], num_blocks=7)
    preempted, _ = run(small, PROMPTS, params)
    assert preempted == alone
    assert small.blocks.num_free_blocks == 7


def test_preemption_when_only_the_batch_together_is_short(model16):
    """Two 16-token prompts fill one block each; with one block left, both need a second
    block on the same decode step although each alone would fit."""
    prompts = [PROMPTS[0] + PROMPTS[1][:7], PROMPTS[1] + PROMPTS[2]]
    assert [len(p) for p in prompts] == [16, 16]
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    alone = [run(LLMEngine(model16, [2], num_blocks=8), [p], params)[0][0] for p in prompts]
    tight = LLMEngine(model16, [2], num_blocks=3)
    assert run(tight, prompts, params)[0] == alone
    assert tight.blocks.num_free_blocks == 3


def test_seeded_sampling_is_reproducible(model16):
    params = SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=7)
    a, _ = run(LLMEngine(model16, [2], num_blocks=64), PROMPTS[:1], params)
    b, _ = run(LLMEngine(model16, [2], num_blocks=64), PROMPTS, params)
    assert a[0] == b[0]


def test_context_limit_abort_and_stops(model16):
    engine = LLMEngine(model16, [2], num_blocks=64, max_model_len=32)
    with pytest.raises(
        InvalidRequest,
        match=r"maximum context length is 32 tokens\. However, you requested 39 tokens "
        r"\(9 in the prompt, 30 for the completion\)",
    ) as e:
        engine.add_request(PROMPTS[0], SamplingParams(max_tokens=30))
    assert (e.value.param, e.value.code) == ("max_tokens", "context_length_exceeded")
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.add_request([], SamplingParams())
    rid = engine.add_request(PROMPTS[0], SamplingParams(max_tokens=20, temperature=0))
    engine.step()
    assert engine.blocks.num_free_blocks < 64
    engine.abort(rid)
    assert engine.blocks.num_free_blocks == 64 and not engine.has_unfinished()
    first, _ = run(engine, PROMPTS[:1], SamplingParams(max_tokens=5, temperature=0))
    stopped, _ = run(
        engine,
        PROMPTS[:1],
        SamplingParams(max_tokens=5, temperature=0, stop_token_ids=[first[0][2]]),
    )
    assert stopped[0] == first[0][:3]
    none, _ = run(engine, PROMPTS[:1], SamplingParams(max_tokens=0))
    assert none[0] == [] and engine.blocks.num_free_blocks == 64


def test_prefix_cache_hits_and_chunked_prefill_give_the_cold_tokens(model16):
    """Every INT4/INT8 layer runs the MAD kernels at any batch size and a row's numbers
    never depend on the other rows, so cached prefixes and chunking change nothing."""
    params = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    prompt = (PROMPTS[0] + PROMPTS[1] + PROMPTS[2]) * 3  # 69 tokens
    cold, _ = run(LLMEngine(model16, [2], num_blocks=64), [prompt], params)
    engine = LLMEngine(model16, [2], num_blocks=64)
    run(engine, [prompt[:50] + [9, 9, 9]], params)  # caches 3 full blocks of the prefix
    rid = engine.add_request(prompt, params)
    hit = None
    while engine.has_unfinished():
        engine.step()
        hit = next((o for o in engine.pop_finished() if o.request_id == rid), hit)
    assert hit.num_cached_tokens == 48 and hit.token_ids == cold[0]
    chunked, _ = run(
        LLMEngine(model16, [2], num_blocks=64, max_num_batched_tokens=7), [prompt], params
    )
    assert chunked == cold
