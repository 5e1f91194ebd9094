"""Prompt-lookup decoding: drafts copied from the sequence, verified in one forward.

The reference for every check is the same engine decoding one token per step
(prompt_lookup=0): greedy tokens and their logprobs must be bit-identical, sampled
tokens must have the same distribution, and no KV block may leak or be read stale.
"""

import numpy as np
import pytest

from lutlm.engine.drafting import LookupState, propose
from lutlm.engine.engine import LLMEngine
from lutlm.engine.sampling_params import SamplingParams

from .model_assets import smollm2_path
from .tiny_model import VOCAB, tiny_decoder


@pytest.fixture(scope="module")
def model():
    return tiny_decoder()


def params(k: int, **kw) -> SamplingParams:
    kw = {"max_tokens": 40, "temperature": 0, "ignore_eos": True} | kw
    return SamplingParams(prompt_lookup=k, **kw)


def check_blocks(eng: LLMEngine) -> None:
    """Every reference is held by a live sequence; free blocks are exactly the unheld."""
    refs = np.zeros(eng.blocks.num_blocks, np.int64)
    for req in eng.running:
        np.add.at(refs, req.block_table, 1)
        # A decoding sequence holds the blocks of its tokens and no more (rejected
        # drafts' blocks were given back).
        assert len(req.block_table) <= -(-req.num_tokens // eng.block_size) + 1
    assert refs.tolist() == [b.ref_count for b in eng.blocks.blocks]
    assert set(eng.blocks.free) == {i for i, r in enumerate(refs) if r == 0}


def run(eng: LLMEngine, prompts, ps, check=False):
    ps = ps if isinstance(ps, list) else [ps] * len(prompts)
    rids = [eng.add_request(p, sp) for p, sp in zip(prompts, ps, strict=True)]
    done = {}
    while eng.has_unfinished():
        eng.step()
        done.update((o.request_id, o) for o in eng.pop_finished())
        if check:
            check_blocks(eng)
    reqs = [done[r] for r in rids]
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks  # nothing leaked
    return reqs


def repetitive_prompts(seed: int, count: int) -> list[list[int]]:
    """Random prompts, half of them made of a repeated random span."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        span = rng.integers(0, VOCAB, size=int(rng.integers(2, 24))).tolist()
        out.append(span * (1 + i % 2 + int(rng.integers(0, 3)) * (i % 2)))
    return out


# -- the drafter -----------------------------------------------------------------------


def drafter(max_drafts: int, draft_len: int | None = None) -> LookupState:
    state = LookupState.new(max_drafts)
    assert state.draft_len == 1  # every sequence starts with one draft
    state.draft_len = max_drafts if draft_len is None else draft_len
    return state


def test_propose_copies_what_followed_the_suffix():
    t = np.array([5, 1, 2, 3, 4, 6, 7, 8, 1, 2, 3])
    assert propose(t, drafter(4), limit=10) == [4, 6, 7, 8]
    assert propose(t, drafter(9), limit=2) == [4, 6]  # the caller's limit wins
    assert propose(t, drafter(9), limit=0) == []
    # Longest n-gram first: [9, 2, 3] never occurred, [2, 3] did (followed by 4); a
    # match shorter than three tokens counts only near where the last copy ended.
    t = np.array([2, 3, 4, 0, 9, 2, 3])
    assert propose(t, drafter(2), 10) == []
    state = drafter(2)
    state.source = 1
    assert propose(t, state, 10) == [4, 0]
    assert propose(np.array([1, 2, 3]), drafter(4), 10) == []  # no repeat
    # The latest occurrence wins without a copy position: 7 0 1 followed by 8, then 9.
    assert propose(np.array([7, 0, 1, 8, 7, 0, 1, 9, 7, 0, 1]), drafter(1), 10) == [9]
    # A run of one token drafts more of it.
    assert propose(np.array([4, 4, 4, 4]), drafter(3), 10) == [4]
    # A lone 1-gram match (no copy to resume) drafts nothing: free text is full of them.
    assert propose(np.array([7, 8, 0, 7]), drafter(2), 10) == []


def test_token_buffer_follows_the_sequence():
    state, prompt, output = LookupState.new(4), list(range(50)), []
    for t in range(300):  # grows past its first capacities
        output.append(1000 + t)
        assert state.tokens(prompt, output).tolist() == prompt + output


def test_no_drafts_when_the_model_is_unsure():
    state = LookupState.new(4)
    assert not state.unsure()  # nothing seen yet
    state.last_logits = np.array([5.0, 0.0, 0.0, 0.0], np.float32)  # p(top) = 0.98
    assert not state.unsure()
    state.last_logits = np.array([1.0, 0.9, 0.0, 0.0], np.float32)  # p(top) = 0.41
    assert state.unsure()


def test_copy_position_follows_the_source_forward():
    # The source reads "f x = a ; x = b ;" and the output copies it with x renamed to y:
    # after the rename the lookup of "=" continues where the copy stopped, not at the
    # latest "=" (which is in the output itself).
    src = [20, 10, 11, 12, 13, 10, 11, 14, 13]
    state = drafter(4)
    assert propose(np.array([*src, 20, 10, 11]), state, 10) == [12, 13, 10, 11]
    state.update(4, 2)  # "a ;" accepted, then the model wrote y (30) instead of x
    assert state.source == 6 and state.draft_len == 3
    out = [20, 10, 11, 12, 13, 30, 11]
    assert propose(np.array([*src, *out]), state, 10) == [14, 13, 20]
    # A 1-gram match far beyond where the copy stopped is not trusted.
    far = [*src, *([40, 41, 42] * 4), 11]
    state = drafter(4)
    state.source = 1
    assert propose(np.array(far), state, 10) == [12, 13, 10, 11]  # at the copy position
    state.source = len(far) - 1
    assert propose(np.array(far), state, 10) == []  # the latest is 9 tokens back: no


def test_draft_length_adapts_to_acceptance():
    state = LookupState.new(16)
    state.update(16, 3)
    assert state.draft_len == 4  # one more than accepted
    state.update(4, 4)
    assert state.draft_len == 8  # doubles after a full acceptance
    state.update(8, 8)
    state.update(16, 16)
    assert state.draft_len == 16  # capped by the request's prompt_lookup
    state.update(1, 0)
    assert state.draft_len == 1
    # Misses in a row pause drafting for 1, 3, 7, 15, 15 steps; a hit ends the pauses.
    state = LookupState.new(4)
    for pause in (1, 3, 7, 15, 15):
        assert not state.paused()
        state.update(1, 0)
        assert [state.paused() for _ in range(pause + 1)] == [True] * pause + [False]
        state.pause = 0
    state.update(1, 1)  # a hit: the next miss pauses one step again
    assert state.misses == 0 and not state.paused()
    state.update(1, 0)
    assert state.paused() and not state.paused()


# -- the engine, tiny f32 model --------------------------------------------------------


def test_greedy_tokens_and_logprobs_are_those_of_plain_decoding(model):
    prompts = repetitive_prompts(0, 16)
    plain = run(LLMEngine(model, [], num_blocks=256, block_size=4), prompts, params(0, logprobs=3))
    eng = LLMEngine(model, [], num_blocks=256, block_size=4, max_num_seqs=8)
    drafted = run(eng, prompts, params(8, logprobs=3), check=True)
    for a, b in zip(plain, drafted, strict=True):
        assert a.token_ids == b.token_ids
        # Bit-identical logprobs: the verification rows saw the same K/V as plain
        # decoding (no stale slot of a rejected draft was read).
        assert a.outputs[0].logprobs == b.outputs[0].logprobs
    # Both outcomes happened, so the comparison covered acceptance and rollback.
    assert 0 < eng.num_accepted_tokens < eng.num_draft_tokens


def test_penalties_count_the_drafts_before_each_row(model):
    # With penalties, row i's logits are processed with drafts[:i] in the history, as
    # plain decoding would have them by then.
    prompts = repetitive_prompts(4, 8)
    pen = {"frequency_penalty": 0.5}
    plain = run(LLMEngine(model, [], num_blocks=256, block_size=4), prompts, params(0, **pen))
    eng = LLMEngine(model, [], num_blocks=256, block_size=4)
    drafted = run(eng, prompts, params(8, **pen))
    assert [r.token_ids for r in drafted] == [r.token_ids for r in plain]
    assert eng.num_accepted_tokens > 0


def test_mixed_batch_forks_prefix_cache_and_stop_conditions(model):
    prompts = repetitive_prompts(1, 8)
    mixed = [params(k, n=n, max_tokens=m) for k, n, m in [(8, 1, 40), (0, 1, 40), (4, 2, 33)] * 3]
    mixed = mixed[: len(prompts)]
    ref_eng = LLMEngine(model, [], num_blocks=512, block_size=4, enable_prefix_caching=False)
    ref = run(ref_eng, prompts, [params(0, n=p.n, max_tokens=p.max_tokens) for p in mixed])
    eng = LLMEngine(model, [], num_blocks=512, block_size=4, max_num_seqs=6)
    # The same prompts twice: the second round starts from prefix-cache hits.
    for _ in range(2):
        got = run(eng, prompts, mixed, check=True)
        for a, b, sp in zip(ref, got, mixed, strict=True):
            assert [s.token_ids for s in a.outputs] == [s.token_ids for s in b.outputs]
            assert all(len(s.token_ids) == sp.max_tokens for s in b.outputs)
    assert eng.blocks.hits > 0 and eng.num_accepted_tokens > 0
    # An EOS or stop token inside an accepted run ends the sequence right there.
    tokens = ref[0].token_ids
    stop = tokens[len(tokens) // 2]
    want = tokens[: tokens.index(stop) + 1]
    for eos, sp in (([stop], params(8, ignore_eos=False)), ([], params(8, stop_token_ids=[stop]))):
        eng = LLMEngine(model, eos, num_blocks=256, block_size=4)
        (req,) = run(eng, prompts[:1], sp)
        assert req.token_ids == want and req.finish_reason == "stop"


def test_scarce_blocks_drop_drafts_before_preempting(model):
    prompts = repetitive_prompts(2, 6)
    ref = run(LLMEngine(model, [], num_blocks=256, block_size=4), prompts, params(0))
    eng = LLMEngine(model, [], num_blocks=40, block_size=4, max_num_seqs=6)
    got = run(eng, prompts, params(16), check=True)
    assert [r.token_ids for r in got] == [r.token_ids for r in ref]


def test_sampling_keeps_the_distribution(model):
    # Many seeded samples of a prompt whose continuation the drafter proposes, with and
    # without drafts: the token distributions at the drafted positions must agree
    # (chi-square homogeneity test; the seeds are fixed, so the test is deterministic).
    prompt = repetitive_prompts(3, 2)[1]
    # Greedy continuation first, so that the drafter has something to copy.
    (greedy,) = run(LLMEngine(model, [], num_blocks=64, block_size=4), [prompt], params(0))
    prompt = prompt + greedy.token_ids[:8] + prompt
    counts = []
    for k in (0, 4):
        eng = LLMEngine(
            model, [], num_blocks=1024, block_size=4, max_num_seqs=256, max_num_batched_tokens=4096
        )
        sp = [params(k, temperature=1.3, max_tokens=4, seed=s) for s in range(1500)]
        reqs = run(eng, [prompt] * len(sp), sp)
        out = np.array([r.token_ids for r in reqs])
        counts.append([np.bincount(out[:, j], minlength=VOCAB) for j in (1, 2, 3)])
        if k:
            assert 0 < eng.num_accepted_tokens < eng.num_draft_tokens
    from scipy.stats import chi2_contingency

    for j in range(3):
        table = np.array([counts[0][j], counts[1][j]])
        table = table[:, table.sum(axis=0) > 0]
        assert chi2_contingency(table).pvalue > 1e-3, j


def test_prompt_lookup_range_is_checked():
    with pytest.raises(ValueError, match="prompt_lookup must be in"):
        SamplingParams(prompt_lookup=-1)
    with pytest.raises(ValueError, match="prompt_lookup must be in"):
        SamplingParams(prompt_lookup=1000)
    with pytest.raises(ValueError, match="prompt_lookup must be an integer"):
        SamplingParams(prompt_lookup=2.5)


# -- the engine, SmolLM2 ---------------------------------------------------------------

REWRITE = """Repeat this C function exactly, with no other text.

int sum_positive(const int *values, int count) {
    int total = 0;
    for (int i = 0; i < count; i++) {
        if (values[i] > 0) {
            total += values[i];
        }
    }
    return total;
}
"""


def test_smollm2_greedy_is_unchanged_and_rewrites_accept_drafts():
    from lutlm.llm import LLM

    llm = LLM(smollm2_path(), act_bits=16)
    messages = [
        [{"role": "user", "content": REWRITE}],
        [{"role": "user", "content": "Write a short poem about the sea."}],
    ]
    plain = llm.chat(messages, SamplingParams(max_tokens=48, temperature=0))
    before = llm.engine.num_accepted_tokens
    drafted = llm.chat(messages, SamplingParams(max_tokens=48, temperature=0, prompt_lookup=8))
    for a, b in zip(plain, drafted, strict=True):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
    assert llm.engine.num_accepted_tokens - before >= 10
    assert "int total = 0;" in drafted[0].outputs[0].text
