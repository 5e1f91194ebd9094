"""Sampler and SamplingParams: checked against direct numpy computations."""

import numpy as np
import pytest

from lutlm.engine.sampler import Sampler, make_generator
from lutlm.engine.sampling_params import SamplingParams

PROBS = np.array([0.5, 0.3, 0.15, 0.05])


def sp(**kwargs) -> SamplingParams:
    return SamplingParams(**kwargs)


def reference_probs(logits, temperature=1.0, top_k=-1, top_p=1.0, min_p=0.0):
    """Straightforward full-sort implementation of temperature, top-k, top-p, min-p."""
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.ones(p.size, bool)
    if 0 < top_k < p.size:
        keep &= p >= p[order[top_k - 1]]
    q = np.where(keep, p, 0.0)
    q /= q.sum()
    if top_p < 1:
        cum = np.cumsum(q[order])
        last = int(np.argmax(cum >= top_p - 1e-12))  # index of the last kept token
        keep &= q >= q[order[last]]
    keep &= p >= min_p * p.max()
    q = np.where(keep, p, 0.0)
    return q / q.sum()


def draw(sampler, logits, params, num_draws, seed=0, **kwargs):
    """num_draws samples for one row, drawn as one batch sharing one Generator."""
    batch = np.repeat(np.asarray(logits, np.float32)[None, :], num_draws, axis=0)
    gen = make_generator(seed)
    out = sampler.sample(batch, [params] * num_draws, generators=[gen] * num_draws, **kwargs)
    return out.token_ids


# --- greedy -----------------------------------------------------------------------------


def test_greedy_is_argmax(rng):
    logits = rng.standard_normal((7, 1000)).astype(np.float32)
    out = Sampler().sample(logits, [sp(temperature=0.0)] * 7)
    np.testing.assert_array_equal(out.token_ids, logits.argmax(axis=1))
    assert out.token_ids.dtype == np.int64
    assert out.logprobs == [None] * 7 and out.top_logprobs == [None] * 7


def test_greedy_ignores_truncation_and_breaks_ties_to_lowest_id():
    logits = np.array([[0.0, 3.0, 3.0, 1.0]], np.float32)
    params = sp(temperature=0.0, top_k=1, top_p=0.1, min_p=0.9)
    assert Sampler().sample(logits, [params]).token_ids[0] == 1


def test_tiny_temperature_approaches_argmax(rng):
    logits = rng.standard_normal((50, 300)).astype(np.float32)
    gens = [make_generator(s) for s in range(50)]
    for temperature in (1e-3, 1e-6, 1e-300):
        out = Sampler().sample(logits, [sp(temperature=temperature)] * 50, generators=gens)
        np.testing.assert_array_equal(out.token_ids, logits.argmax(axis=1))


def test_temperature_scales_the_distribution():
    logits = np.log(PROBS)
    for temperature in (0.5, 1.0, 2.0):
        p = Sampler().probs(logits[None], [sp(temperature=temperature)])[0]
        expected = PROBS ** (1 / temperature) / (PROBS ** (1 / temperature)).sum()
        np.testing.assert_allclose(p, expected, rtol=1e-12)


# --- truncation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, kept",
    [
        ({"top_p": 0.8}, [0, 1]),  # 0.5 + 0.3 reaches 0.8 exactly
        ({"top_p": 0.81}, [0, 1, 2]),
        ({"top_p": 0.5}, [0]),
        ({"top_p": 0.01}, [0]),  # the top token is always kept
        ({"top_p": 1.0}, [0, 1, 2, 3]),
        ({"top_k": 2}, [0, 1]),
        ({"top_k": 1}, [0]),
        ({"top_k": 4}, [0, 1, 2, 3]),
        ({"top_k": 100}, [0, 1, 2, 3]),
        ({"top_k": 0}, [0, 1, 2, 3]),
        ({"min_p": 0.2}, [0, 1, 2]),  # threshold 0.1
        ({"min_p": 0.59}, [0, 1]),  # threshold 0.295 keeps 0.3
        ({"min_p": 0.61}, [0]),  # threshold 0.305 drops it
        ({"min_p": 1.0}, [0]),
        # top_p is measured after top_k renormalizes: [.5, .3, .15] / .95 reaches .82
        # after two tokens, while the unrenormalized mass would need three.
        ({"top_k": 3, "top_p": 0.82}, [0, 1]),
        # after temperature 2 the mass is [.379, .294, .208, .120]: .75 needs three.
        ({"temperature": 2.0, "top_p": 0.75}, [0, 1, 2]),
        ({"temperature": 2.0, "min_p": 0.5}, [0, 1, 2]),
    ],
)
def test_truncation_on_hand_made_distribution(kwargs, kept):
    logits = np.log(PROBS)[None]
    p = Sampler().probs(logits, [sp(**kwargs)])[0]
    assert np.flatnonzero(p).tolist() == kept
    temperature = kwargs.get("temperature", 1.0)
    base = PROBS ** (1 / temperature)
    expected = np.zeros(4)
    expected[kept] = base[kept] / base[kept].sum()
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "probs, top_p, num_kept",
    [
        ([0.4, 0.3, 0.2, 0.1], 0.4, 1),
        ([0.4, 0.3, 0.2, 0.1], 0.7, 2),
        ([0.7, 0.2, 0.1], 0.7, 1),
        ([0.4, 0.2, 0.2, 0.1, 0.1], 0.8, 3),
        ([0.35, 0.25, 0.2, 0.15, 0.05], 0.6, 2),
        ([0.35, 0.25, 0.2, 0.15, 0.05], 0.8, 3),
    ],
)
def test_top_p_mass_exactly_at_the_boundary(probs, top_p, num_kept):
    """The kept mass equals top_p in exact arithmetic; rounding must not add a token."""
    p = Sampler().probs(np.log(probs)[None], [sp(top_p=top_p)])[0]
    assert np.flatnonzero(p).tolist() == list(range(num_kept))


def test_truncation_keeps_ties():
    logits = np.array([[1.0, 1.0, 1.0, 0.0]])
    p = Sampler().probs(logits, [sp(top_k=2)])[0]
    np.testing.assert_allclose(p[:3], 1 / 3)
    assert p[3] == 0
    p = Sampler().probs(logits, [sp(top_p=0.2)])[0]
    np.testing.assert_allclose(p[:3], 1 / 3)


@pytest.mark.parametrize("vocab", [10, 3000])  # 3000 exercises the widening partial sort
def test_truncation_matches_reference(rng, vocab):
    sampler = Sampler()
    for _ in range(40):
        logits = rng.standard_normal(vocab) * rng.uniform(0.1, 4)
        kwargs = {
            "temperature": float(rng.uniform(0.2, 2.0)),
            "top_k": int(rng.choice([-1, 1, 2, 5, vocab // 2, vocab])),
            "top_p": float(rng.choice([1.0, rng.uniform(0.05, 1.0)])),
            "min_p": float(rng.choice([0.0, rng.uniform(0.0, 0.5)])),
        }
        p = sampler.probs(logits[None], [sp(**kwargs)])[0]
        np.testing.assert_allclose(p, reference_probs(logits, **kwargs), rtol=1e-9, atol=1e-15)


def test_flat_distribution_top_p_needs_most_of_the_vocab():
    vocab = 5000
    logits = np.zeros((1, vocab))
    p = Sampler().probs(logits, [sp(top_p=0.9)])[0]
    np.testing.assert_allclose(p, 1 / vocab)  # all tied: tokens tied with the last kept stay
    logits = -np.arange(vocab, dtype=np.float64)[None] * 1e-3
    p = Sampler().probs(logits, [sp(top_p=0.9)])[0]
    np.testing.assert_allclose(p, reference_probs(logits[0], top_p=0.9), rtol=1e-9)
    assert 512 < np.count_nonzero(p) < vocab


# --- drawing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"temperature": 0.7},
        {"temperature": 1.5, "top_k": 4},
        {"top_p": 0.8},
        {"temperature": 1.3, "min_p": 0.1},
    ],
)
def test_empirical_frequencies_match_processed_distribution(kwargs):
    logits = np.log(np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02]))
    num_draws = 20000
    tokens = draw(Sampler(), logits, sp(**kwargs), num_draws, seed=7)
    expected = reference_probs(logits, **kwargs)
    counts = np.bincount(tokens, minlength=logits.size)
    assert counts[expected == 0].sum() == 0
    sigma = np.sqrt(num_draws * expected * (1 - expected))
    assert np.all(np.abs(counts - num_draws * expected) <= 4 * sigma + 1), (counts, expected)
    # chi-square over the kept tokens: df <= 6, and chi2(6) exceeds 27.9 with prob 1e-4
    kept = expected > 0
    chi2 = ((counts[kept] - num_draws * expected[kept]) ** 2 / (num_draws * expected[kept])).sum()
    assert chi2 < 27.9


def test_each_draw_uses_one_number_from_the_generator():
    logits = np.zeros((1, 10))
    gen, twin = make_generator(3), make_generator(3)
    for _ in range(5):
        token = Sampler().sample(logits, [sp()], generators=[gen]).token_ids[0]
        assert token == int(twin.random() * 10)


# --- penalties and bias -------------------------------------------------------------------


def test_penalties_against_hand_computed_values():
    logits = np.array([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0]], np.float32)
    params = sp(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    x = Sampler().process_logits(logits, [params], [[0, 0]], [np.array([1, 1, 3])])[0]
    # token 0: prompt only, repetition: 2 / 2
    # token 1: output twice, repetition -1 * 2, then -(2 * 0.25 + 0.5)
    # token 3: output once, repetition 3 / 2, then -(0.25 + 0.5)
    np.testing.assert_allclose(x, [1.0, -3.0, 0.5, 0.75, -2.0, 1.0])


def test_presence_and_frequency_apply_to_output_only():
    logits = np.zeros((1, 4))
    params = sp(presence_penalty=1.0, frequency_penalty=-0.5)
    x = Sampler().process_logits(logits, [params], [[0, 1, 2]], [[2, 2, 2]])[0]
    np.testing.assert_allclose(x, [0.0, 0.0, -1.0 + 1.5, 0.0])


def test_logit_bias_comes_before_repetition_penalty():
    logits = np.array([[1.0, 0.0]])
    params = sp(logit_bias={0: 1.0}, repetition_penalty=2.0)
    x = Sampler().process_logits(logits, [params], [[0]], [[]])[0]
    assert x[0] == pytest.approx((1.0 + 1.0) / 2.0)


def test_penalties_steer_greedy_choice():
    logits = np.array([[3.0, 2.0, 0.0]], np.float32)
    params = sp(temperature=0.0, frequency_penalty=0.6)
    out = Sampler().sample(logits, [params], [[]], [[0, 0]])
    assert out.token_ids[0] == 1


def test_logit_bias_minus_100_bans_a_token():
    logits = np.array([5.0, 1.0, 0.0, -1.0])
    banned = sp(logit_bias={0: -100})
    greedy = sp(temperature=0, logit_bias={0: -100})
    assert Sampler().sample(logits[None], [greedy]).token_ids[0] == 1
    tokens = draw(Sampler(), logits, sp(temperature=2.0, logit_bias={0: -100}), 20000)
    assert 0 not in tokens
    assert banned.logit_bias == {0: -100.0}


def test_logit_bias_is_clipped_and_plus_100_forces_a_token():
    params = sp(logit_bias={2: 500.0, 1: -1e9})
    assert params.logit_bias == {2: 100.0, 1: -100.0}
    logits = np.array([10.0, 9.0, 0.0])
    assert set(draw(Sampler(), logits, params, 2000).tolist()) == {2}


def test_inputs_are_not_modified(rng):
    logits = rng.standard_normal((2, 50)).astype(np.float32)
    before = logits.copy()
    params = [sp(logit_bias={1: 5}, repetition_penalty=1.5, top_k=3), sp(temperature=0)]
    Sampler().sample(logits, params, [[1, 2], []], [[3], []], [make_generator(0), None])
    np.testing.assert_array_equal(logits, before)


# --- reproducibility --------------------------------------------------------------------


def run_steps(sampler, rows, row_of_interest, seed, steps=8):
    """Sample `steps` times with a batch of `rows` logits; return one row's tokens."""
    gens = [make_generator(seed if i == row_of_interest else None) for i in range(len(rows))]
    params = [sp(temperature=1.0, top_p=0.95, top_k=50)] * len(rows)
    tokens = []
    for _ in range(steps):
        out = sampler.sample(np.stack(rows), params, generators=gens)
        tokens.append(int(out.token_ids[row_of_interest]))
    return tokens


def test_same_seed_same_tokens_regardless_of_batch(rng):
    vocab = 2000
    mine = rng.standard_normal(vocab).astype(np.float32)
    others = [rng.standard_normal(vocab).astype(np.float32) for _ in range(5)]
    sampler = Sampler()
    alone = run_steps(sampler, [mine], 0, seed=42)
    assert run_steps(sampler, [mine], 0, seed=42) == alone
    assert run_steps(sampler, [*others[:3], mine, *others[3:]], 3, seed=42) == alone
    assert run_steps(sampler, [mine, *others], 0, seed=42) == alone
    assert run_steps(sampler, [*others, mine], 5, seed=42) == alone
    assert run_steps(sampler, [mine], 0, seed=43) != alone


def test_greedy_rows_do_not_consume_randomness(rng):
    logits = rng.standard_normal((2, 100))
    a = Sampler().sample(logits[:1], [sp()], generators=[make_generator(1)])
    b = Sampler().sample(
        logits[::-1], [sp(temperature=0), sp()], generators=[None, make_generator(1)]
    )
    assert a.token_ids[0] == b.token_ids[1]


def test_make_generator_streams():
    assert make_generator(5).random() == np.random.default_rng(5).random()
    assert make_generator(5, 1).random() != make_generator(5, 0).random()
    assert make_generator(5, 1).random() == make_generator(5, 1).random()
    assert make_generator(-1).random() == make_generator(2**64 - 1).random()
    assert make_generator(None).random() != make_generator(None).random()


# --- logprobs ----------------------------------------------------------------------------


def numpy_log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def test_logprobs_are_raw_log_softmax(rng):
    logits = (rng.standard_normal((3, 500)) * 3).astype(np.float32)
    params = [
        sp(temperature=0.5, top_k=10, logprobs=5, logit_bias={7: 3.0}),
        sp(temperature=0, logprobs=0),
        sp(repetition_penalty=1.3),
    ]
    gens = [make_generator(i) for i in range(3)]
    out = Sampler().sample(logits, params, [[1, 2], [], [4]], [[3], [], []], gens)
    ref = numpy_log_softmax(logits[0])
    assert out.logprobs[0] == pytest.approx(ref[out.token_ids[0]], abs=1e-12)
    top = np.argsort(-ref, kind="stable")[:5]
    assert [t for t, _ in out.top_logprobs[0]] == top.tolist()
    np.testing.assert_allclose([lp for _, lp in out.top_logprobs[0]], ref[top], atol=1e-12)
    assert out.logprobs[1] == pytest.approx(numpy_log_softmax(logits[1]).max(), abs=1e-12)
    assert out.top_logprobs[1] == []
    assert out.logprobs[2] is None and out.top_logprobs[2] is None


def test_logprobs_ties_and_more_than_vocab():
    logits = np.array([[0.0, 1.0, 1.0, 0.0]])
    out = Sampler().sample(logits, [sp(temperature=0, logprobs=20)])
    assert [t for t, _ in out.top_logprobs[0]] == [1, 2, 0, 3]
    assert np.exp([lp for _, lp in out.top_logprobs[0]]).sum() == pytest.approx(1.0)


# --- vocab padding -----------------------------------------------------------------------


def test_vocab_padding_is_never_chosen_nor_reported():
    logits = np.zeros((2, 8), np.float32)
    logits[:, 5:] = 50.0  # padding columns with large garbage
    sampler = Sampler(vocab_size=5)
    params = [sp(temperature=0, logprobs=20), sp(temperature=3.0, logprobs=2)]
    for seed in range(50):
        out = sampler.sample(logits, params, generators=[None, make_generator(seed)])
        assert (out.token_ids < 5).all()
    assert len(out.top_logprobs[0]) == 5
    assert out.logprobs[0] == pytest.approx(np.log(1 / 5))
    assert sampler.probs(logits, params).shape == (2, 5)


def test_logit_bias_on_padding_id_is_refused():
    with pytest.raises(ValueError, match="logit_bias token id 6 is out of range"):
        Sampler(vocab_size=5).sample(np.zeros((1, 8)), [sp(temperature=0, logit_bias={6: 1})])
    with pytest.raises(ValueError, match="logit_bias token id 6"):
        sp(logit_bias={6: 1}).check_vocab(5)
    with pytest.raises(ValueError, match="stop_token_ids token id 5"):
        sp(stop_token_ids=[1, 5]).check_vocab(5)
    sp(logit_bias={4: 1}, stop_token_ids=[4]).check_vocab(5)


# --- bad batches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits, params, kwargs, match",
    [
        (np.zeros(4), [sp()], {}, r"shape \[B, V\]"),
        (np.zeros((2, 4)), [sp()], {}, "1 SamplingParams for 2 rows"),
        (np.array([[0.0, np.nan]]), [sp(temperature=0)], {}, "NaN"),
        (np.array([[0.0, np.inf]]), [sp(temperature=0)], {}, r"rows \[0\]"),
        (np.full((1, 3), -np.inf), [sp(temperature=0)], {}, "only -inf"),
        (np.zeros((1, 4), np.int32), [sp()], {}, "float array"),
        (np.zeros((1, 4)), [sp()], {}, "row 0 samples .* no generator"),
        (np.zeros((1, 4)), [sp()], {"generators": [None]}, "row 0 samples"),
        (np.zeros((1, 4)), [sp()], {"generators": []}, "0 generators for 1 rows"),
        (
            np.zeros((1, 4)),
            [sp(temperature=0, repetition_penalty=2)],
            {"output_token_ids": [[]]},
            "prompt_token_ids is needed",
        ),
        (
            np.zeros((1, 4)),
            [sp(temperature=0, presence_penalty=1)],
            {},
            "output_token_ids is needed",
        ),
        (
            np.zeros((1, 4)),
            [sp(temperature=0, presence_penalty=1)],
            {"output_token_ids": [[4]]},
            r"output_token_ids\[0\] holds token ids outside",
        ),
        (
            np.zeros((1, 4)),
            [sp(temperature=0, repetition_penalty=2)],
            {"prompt_token_ids": [[-1]], "output_token_ids": [[]]},
            "outside",
        ),
    ],
)
def test_bad_batch_is_refused(logits, params, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sampler().sample(logits, params, **kwargs)


def test_refused_batch_leaves_generators_untouched():
    gen, twin = make_generator(9), make_generator(9)
    params = [sp(), sp(logit_bias={7: 1.0})]  # row 1 is bad, row 0 comes first
    with pytest.raises(ValueError, match="logit_bias token id 7"):
        Sampler().sample(np.zeros((2, 4)), params, generators=[gen, make_generator(0)])
    assert gen.random() == twin.random()


def test_vocab_size_wider_than_logits_is_refused():
    with pytest.raises(ValueError, match="vocab size is 9"):
        Sampler(vocab_size=9).sample(np.zeros((1, 8)), [sp(temperature=0)])
    with pytest.raises(ValueError, match="vocab_size"):
        Sampler(vocab_size=0)


def test_empty_batch():
    out = Sampler().sample(np.zeros((0, 10), np.float32), [])
    assert out.token_ids.shape == (0,) and out.logprobs == []


# --- SamplingParams ---------------------------------------------------------------------


def test_defaults_and_normalization():
    p = SamplingParams()
    assert (p.n, p.max_tokens, p.temperature, p.top_p, p.top_k, p.min_p) == (1, 16, 1.0, 1.0, -1, 0)
    assert not p.greedy and SamplingParams(temperature=0).greedy
    assert p.logit_bias == {} and p.stop == [] and p.stop_token_ids == []
    assert p.seed is None and p.logprobs is None and p.ignore_eos is False
    q = SamplingParams(
        stop="###",
        stop_token_ids=(2,),
        temperature=np.float32(0.5),
        top_k=np.int64(3),
        logit_bias={np.int64(3): 1},
        logprobs=20,
        max_tokens=0,
        seed=-7,
        top_p=1,
        min_p=1,
    )
    assert q.stop == ["###"] and q.stop_token_ids == [2]
    assert type(q.temperature) is float and type(q.top_k) is int
    assert q.logit_bias == {3: 1.0} and type(next(iter(q.logit_bias))) is int
    assert q.logprobs == 20 and q.max_tokens == 0 and q.seed == -7
    assert SamplingParams(stop=None, logit_bias=None, stop_token_ids=None).stop == []
    with pytest.raises(TypeError):
        SamplingParams(4)  # keyword-only


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n": 0}, "n must be at least 1"),
        ({"n": 1.0}, "n must be an integer"),
        ({"max_tokens": -1}, "max_tokens must be at least 0"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
        ({"temperature": -0.1}, "temperature must be at least 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": "1"}, "temperature must be a finite number"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"top_p": -1}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -2}, "top_k must be -1 or 0"),
        ({"top_k": 1.5}, "top_k must be an integer"),
        ({"min_p": -0.01}, r"min_p must be in \[0, 1\]"),
        ({"min_p": 1.5}, r"min_p must be in \[0, 1\]"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be greater than 0"),
        ({"repetition_penalty": -1.0}, "repetition_penalty must be greater than 0"),
        ({"presence_penalty": 2.5}, r"presence_penalty must be in \[-2, 2\]"),
        ({"presence_penalty": -2.01}, r"presence_penalty must be in \[-2, 2\]"),
        ({"frequency_penalty": 3}, r"frequency_penalty must be in \[-2, 2\]"),
        ({"frequency_penalty": -2.5}, r"frequency_penalty must be in \[-2, 2\]"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias keys must be token ids"),
        ({"logit_bias": {"50256": 1.0}}, "logit_bias keys must be token ids"),
        ({"logit_bias": {1: "x"}}, r"logit_bias\[1\] must be a finite number"),
        ({"logit_bias": {1: float("nan")}}, r"logit_bias\[1\] must be a finite number"),
        ({"logit_bias": [1, 2]}, "logit_bias must be a dict"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"stop": [1]}, "stop must be a string or a list of strings"),
        ({"stop": ["a", ""]}, "stop strings must not be empty"),
        ({"stop_token_ids": [-1]}, "stop_token_ids must hold token ids"),
        ({"stop_token_ids": 5}, "stop_token_ids must be a list"),
        ({"ignore_eos": 1}, "ignore_eos must be a bool"),
        ({"logprobs": 21}, r"logprobs must be in \[0, 20\]"),
        ({"logprobs": -1}, r"logprobs must be in \[0, 20\]"),
        ({"logprobs": True}, "logprobs must be an integer"),
    ],
)
def test_invalid_params_name_the_parameter(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        SamplingParams(**kwargs)


def test_minus_inf_logits_are_never_drawn():
    logits = np.array([[0.0, -np.inf, 1.0, -np.inf, 0.5]])
    for kwargs in ({}, {"top_p": 0.99}, {"top_k": 4}, {"min_p": 0.01}):
        tokens = draw(Sampler(), logits[0], sp(**kwargs), 3000)
        assert not np.isin(tokens, [1, 3]).any()
    out = Sampler().sample(logits, [sp(temperature=0, logprobs=5)])
    assert [t for t, _ in out.top_logprobs[0]] == [2, 4, 0, 1, 3]
    assert out.top_logprobs[0][-1][1] == -np.inf


class _LastDraw:
    """A stand-in Generator whose uniform number is as close to 1 as a double gets."""

    def random(self) -> float:
        return 1.0 - 2.0**-53


def test_draw_at_the_top_of_the_unit_interval_picks_a_possible_token():
    logits = np.array([[0.0, 1.0, -np.inf]])
    for params in (sp(), sp(top_k=2), sp(top_p=0.99)):
        assert Sampler().sample(logits, [params], generators=[_LastDraw()]).token_ids[0] == 1
