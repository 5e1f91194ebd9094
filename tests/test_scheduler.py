"""Continuous batching, prefix caching, copy-on-write forks and preemption.

On a tiny f32 model (tests/tiny_model.py) a sequence's logits do not depend on batching
or chunking, so every schedule must give exactly the tokens of the sequence run alone.
"""

import numpy as np
import pytest

from lutlm.engine.block_manager import BlockManager
from lutlm.engine.engine import LLMEngine
from lutlm.engine.outputs import RequestOutput
from lutlm.engine.sampling_params import SamplingParams
from lutlm.model import ForwardBatch, KVCache

from .tiny_model import VOCAB, tiny_decoder

GREEDY = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    return tiny_decoder()


def prompts(seed: int, lengths) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, size=n).tolist() for n in lengths]


def engine(model, num_blocks=64, **kw) -> LLMEngine:
    return LLMEngine(model, [], num_blocks=num_blocks, block_size=4, **kw)


def drain(eng: LLMEngine) -> dict[str, RequestOutput]:
    """Step until every request is done; their outputs by request id."""
    done: dict[str, RequestOutput] = {}
    while eng.has_unfinished():
        eng.step()
        done.update((o.request_id, o) for o in eng.pop_finished())
    return done


def run(eng: LLMEngine, ps, params=GREEDY) -> list[list[int]]:
    rids = [eng.add_request(p, params) for p in ps]
    done = drain(eng)
    return [done[r].token_ids for r in rids]


def alone(model, ps, params=GREEDY) -> list[list[int]]:
    return [run(engine(model), [p], params)[0] for p in ps]


# -- block manager ---------------------------------------------------------------------


def test_block_manager_prefix_hits_lru_and_fork():
    bm = BlockManager(num_blocks=6, block_size=2)
    table: list[int] = []
    noop = lambda src, dst: None  # noqa: E731
    bm.allocate(table, 0, 5, noop)  # 3 blocks, the last one partial
    hashes: list[int] = []
    bm.cache_full_blocks(table, hashes, [1, 2, 3, 4, 5], 5)
    assert len(hashes) == 2 and bm.num_free_blocks == 3
    # Same prefix: both full blocks hit; the last token is never covered.
    assert bm.prefix_hits([1, 2, 3, 4, 9]) == table[:2]
    assert bm.prefix_hits([1, 2, 3, 4]) == table[:1]
    assert bm.prefix_hits([1, 2, 7, 4, 9]) == table[:1]  # chain breaks at block 2
    assert bm.prefix_hits([9, 2, 3, 4, 9]) == []
    # A fork shares all blocks; writing into the shared partial block copies it.
    copies = []
    sib = bm.fork(table)
    assert bm.blocks_needed(sib, 5, 6) == 1
    bm.allocate(sib, 5, 6, lambda s, d: copies.append((s, d)))
    assert copies == [(table[2], sib[2])] and sib[:2] == table[:2]
    bm.free_table(sib)
    first = list(table)
    bm.free_table(table)
    assert bm.num_free_blocks == 6
    # Freed hashed blocks are still found, until reuse evicts them: the never-used
    # blocks go first, then the freed ones, each table's tail before its prefix.
    assert bm.prefix_hits([1, 2, 3, 4, 9]) == first[:2]
    fresh: list[int] = []
    bm.allocate(fresh, 0, 8, noop)  # 4 blocks: the prefix blocks survive
    assert bm.prefix_hits([1, 2, 3, 4, 9]) == first[:2]
    bm.allocate(fresh, 8, 10, noop)  # a 5th evicts the second prefix block
    assert bm.prefix_hits([1, 2, 3, 4, 9]) == first[:1]


# -- engine ----------------------------------------------------------------------------


def test_continuous_batching_matches_sequences_run_alone(model):
    ps = prompts(1, [5, 17, 9, 30, 3])
    ref = alone(model, ps)
    eng = engine(model, max_num_batched_tokens=8)  # prompts arrive in chunks
    rids = [eng.add_request(p, GREEDY) for p in ps[:2]]
    for _ in range(6):  # the first two are decoding when the others arrive
        eng.step()
    rids += [eng.add_request(p, GREEDY) for p in ps[2:]]
    mixed, done = 0, {}
    while eng.has_unfinished():
        outs = eng.step()
        mixed += len(outs) > 1
        done.update((o.request_id, o) for o in eng.pop_finished())
    assert [done[r].token_ids for r in rids] == ref
    assert mixed > 0


def test_steps_mix_prefill_chunks_and_decodes(model):
    eng = engine(model, max_num_batched_tokens=6)
    a = eng.add_request(prompts(2, [4])[0], GREEDY)
    eng.step()  # a's prompt; a now decodes
    eng.add_request(prompts(3, [20])[0], GREEDY)
    sched = eng.scheduler.schedule()
    assert [(s.seq.request_id, s.num_new_tokens) for s in sched] == [(a, 1), ("req-1", 5)]


def test_prefix_cache_hits_give_the_cold_tokens(model):
    base = prompts(4, [37])[0]
    cold = alone(model, [base])[0]
    eng = engine(model)
    run(eng, [base[:30] + [1, 2, 3]])
    rid = eng.add_request(base, GREEDY)
    req = drain(eng)[rid]
    assert req.token_ids == cold
    assert req.num_cached_tokens == 28  # 7 full blocks of 4 shared with the first prompt
    # The whole prompt again (its last token is always recomputed).
    rid = eng.add_request(base, GREEDY)
    req = drain(eng)[rid]
    assert req.token_ids == cold and req.num_cached_tokens == 36
    assert eng.blocks.num_free_blocks == 64


def test_chunked_prefill_gives_the_cold_tokens(model):
    ps = prompts(5, [41, 13])
    ref = alone(model, ps)
    for budget in (1, 5, 16):
        assert run(engine(model, max_num_batched_tokens=budget), ps) == ref


def test_fork_shares_the_prompt_and_copies_on_write(model):
    p = prompts(6, [10])[0]
    greedy = alone(model, [p])[0]
    eng = engine(model)
    rid = eng.add_request(p, SamplingParams(n=3, max_tokens=20, temperature=0, ignore_eos=True))
    eng.step()  # prompt computed once, then three sequences
    seq = eng._requests[rid]  # the engine's own state, to see the shared blocks
    assert len(seq.sequences) == 3
    # 10 tokens + 1 = 3 blocks of 4; the siblings share the two full ones.
    assert seq.siblings[0].block_table[:2] == seq.block_table[:2]
    assert [o.token_ids for o in drain(eng)[rid].outputs] == [greedy] * 3
    assert eng.blocks.num_free_blocks == 64
    # Seeded sampling: index 0 is the n=1 request with that seed; others differ.
    sp = dict(max_tokens=12, temperature=1.0, seed=11, ignore_eos=True)
    one = run(engine(model), [p], SamplingParams(**sp))[0]
    rid = eng.add_request(p, SamplingParams(n=3, **sp))
    seqs = [o.token_ids for o in drain(eng)[rid].outputs]
    assert seqs[0] == one and len({tuple(s) for s in seqs}) > 1
    rid = eng.add_request(p, SamplingParams(n=3, **sp))
    assert [o.token_ids for o in drain(eng)[rid].outputs] == seqs


def test_preemption_recomputes_and_loses_nothing(model):
    ps = prompts(7, [9, 14, 6, 11])
    params = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    ref = alone(model, ps, params)
    eng = engine(model, num_blocks=14)  # 4 requests need up to 11 blocks each
    assert run(eng, ps, params) == ref
    assert eng.scheduler.num_preemptions > 0
    assert eng.blocks.num_free_blocks == 14
    forked = engine(model, num_blocks=20)  # the prompt's 3 full blocks shared: 19 needed
    n2 = SamplingParams(n=2, max_tokens=30, temperature=0, ignore_eos=True)
    rids = [forked.add_request(p, n2) for p in ps[1:3]]
    done = drain(forked)
    assert forked.scheduler.num_preemptions > 0
    outs = [[o.token_ids for o in done[r].outputs] for r in rids]
    assert outs == [[ref[1]] * 2, [ref[2]] * 2]
    assert forked.blocks.num_free_blocks == 20


def test_abort_frees_every_sequence(model):
    eng = engine(model)
    rid = eng.add_request(prompts(8, [13])[0], SamplingParams(n=2, max_tokens=50))
    for _ in range(4):
        eng.step()
    assert eng.blocks.num_free_blocks < 64
    eng.abort(rid)
    assert eng.blocks.num_free_blocks == 64 and not eng.has_unfinished()
    assert eng.num_requests == 0 and not eng.pop_finished()  # an abort yields no output


def test_prompt_logprobs_match_the_models_scoring(model):
    p = prompts(9, [23])[0]
    cache = KVCache(model.config, num_blocks=8, block_size=4)
    logits = model.forward(ForwardBatch.single(p, 0, list(range(6)), 4, all_logits=True), cache)
    z = logits.astype(np.float64)
    ref = (
        z
        - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
        - z.max(1, keepdims=True)
    )
    eng = engine(model, max_num_batched_tokens=7)  # chunks of 7: rows per chunk
    params = SamplingParams(max_tokens=0, prompt_logprobs=2)
    eng.add_request(p[:8], GREEDY)  # its blocks are cached; prompt logprobs must not use them
    drain(eng)
    rid = eng.add_request(p, params)
    req = drain(eng)[rid]
    assert req.token_ids == [] and req.finish_reason == "length"
    got = np.array([lp for lp, _ in req.prompt_logprobs])
    np.testing.assert_allclose(got, ref[np.arange(22), p[1:]], atol=1e-9)
    for j, (_, top) in enumerate(req.prompt_logprobs):
        assert [t for t, _ in top] == np.argsort(-ref[j], kind="stable")[:2].tolist()
    assert np.isfinite(got).all() and (got <= 0).all()


def test_requests_the_cache_can_never_hold_are_refused(model):
    eng = engine(model, num_blocks=4)
    with pytest.raises(ValueError, match="more KV-cache blocks than the cache holds"):
        eng.add_request(prompts(10, [10])[0], SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.add_request([VOCAB], SamplingParams())
    eng.add_request([1, 2], SamplingParams(max_tokens=14), request_id="x")  # 16: fits
    with pytest.raises(ValueError, match="already in use"):
        eng.add_request([1, 2], SamplingParams(max_tokens=1), request_id="x")
    eng.add_request([1] * 8, SamplingParams(n=2, max_tokens=4))  # 2 shared + 2 own blocks
    with pytest.raises(ValueError, match="3 x 12 tokens need more"):
        eng.add_request([1] * 8, SamplingParams(n=3, max_tokens=4))


def test_a_short_request_starts_while_a_long_prompt_is_prefilled(model):
    """A request arriving behind a long prompt gets its first token within a step or two
    (its prefill shares the step with the long prompt's chunks), and both give exactly
    the tokens they give alone."""
    long_p, short_p = prompts(11, [200, 3])
    eng = engine(model, num_blocks=128, max_num_batched_tokens=32, max_model_len=256)
    long_id = eng.add_request(long_p, GREEDY)
    eng.step()  # the long prompt is running, 32 of its 200 tokens computed
    short_id = eng.add_request(short_p, GREEDY)
    steps, first = 0, {}
    while short_id not in first:
        for out in eng.step():
            if out.new_token_ids:
                first.setdefault(out.request_id, out.new_token_ids)
        steps += 1
    assert steps == 1
    assert long_id not in first  # still prefilling
    done = drain(eng)
    assert [done[long_id].token_ids, done[short_id].token_ids] == alone(model, [long_p, short_p])
