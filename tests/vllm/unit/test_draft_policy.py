"""The cost-aware draft policy (suffix/draft_policy.py) and its two models
(step_cost.py, acceptance.py) on synthetic cost curves and acceptance
patterns; no vLLM engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_inference_vllm.suffix.acceptance import AcceptanceModel, segment_cummin
from arctic_inference_vllm.suffix.draft_policy import Candidates, DraftPolicy
from arctic_inference_vllm.suffix.step_cost import StepCostModel, graph_step_shape, step_shape

K = 8


def graphs(mode: str = "NONE", size: int = 0) -> SimpleNamespace:
    """A stand-in for vLLM's compilation config (the two fields read)."""
    return SimpleNamespace(
        cudagraph_mode=SimpleNamespace(name=mode), max_cudagraph_capture_size=size
    )


def learned(curve: Callable[[int], float], shapes=("eager",), top: int = 1024) -> StepCostModel:
    """A cost model that has seen steps of every size up to ``top``."""
    model = StepCostModel()
    for shape in shapes:
        for n in range(1, top + 1):
            model.observe(shape, n, curve(n))
    return model


def cands(probs: list[list[float]], source: str = "suffix") -> Candidates:
    lengths = [len(p) for p in probs]
    return Candidates(
        [f"r{i}" for i in range(len(probs))],
        np.array([x for p in probs for x in p], dtype=np.float64),
        np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
        [source] * len(probs),
    )


def sure(n_requests: int, length: int = K, p: float = 1.0) -> Candidates:
    return cands([[p] * length for _ in range(n_requests)])


# ------------------------------------------------------------------ the choice


def test_no_drafts_when_they_cannot_pay() -> None:
    # every token costs as much as the whole fixed part of a step, and drafts
    # are accepted with probability 0.3: a draft token adds 0.3 tokens for
    # the price of one step
    policy = DraftPolicy(K, graphs(), cost=learned(lambda n: 0.001 * (1 + n)))
    plan = policy.plan(sure(4, p=0.3), num_rows=4)
    assert plan.kind == "none" and plan.lengths == [0, 0, 0, 0] and plan.tokens == 4


def test_long_drafts_when_steps_are_flat() -> None:
    policy = DraftPolicy(K, graphs(), cost=learned(lambda n: 0.010))
    plan = policy.plan(sure(4, p=0.2), num_rows=4)  # even unlikely tokens are free
    assert plan.lengths == [K] * 4 and plan.kind == "drafts"


def test_nothing_measured_means_flat() -> None:
    plan = DraftPolicy(K, graphs()).plan(sure(2, p=0.15), num_rows=3)
    assert plan.lengths == [K, K]


def test_keeps_the_likely_prefixes_when_tokens_cost_something() -> None:
    # fixed 10 ms + 1 ms per token: a token pays when it is accepted with
    # probability above ~ (step tokens / cost); the first tokens of a good
    # draft do, a poor draft's do not
    policy = DraftPolicy(K, graphs(), cost=learned(lambda n: 0.010 + 0.001 * n))
    good = [1.0, 1.0, 1.0, 0.9, 0.5, 0.2, 0.1, 0.1]
    poor = [0.15, 0.1, 0.1]
    plan = policy.plan(cands([good, poor]), num_rows=2)
    assert plan.lengths[1] == 0
    assert 3 <= plan.lengths[0] < len(good)


def test_uniform_full_graph_step_when_it_is_cheapest() -> None:
    # default vLLM graphs: a uniform decode step (k drafts each) runs one full
    # graph at half the cost of the piecewise steps any other shape gets
    g = graphs("FULL_AND_PIECEWISE", 512)
    cost = StepCostModel()
    for n in range(1, 513):
        cost.observe("piecewise", n, 0.010 + 0.00002 * n)
        cost.observe("full", n, 0.005 + 0.00002 * n)
    policy = DraftPolicy(K, g, cost=cost)
    rows = 4
    real = cands([[1.0, 0.8], [0.9], [0.5, 0.4, 0.3], [1.0]])
    assert policy.uniform_fits(rows, rows, K)
    padded = cands(
        [[1.0, 0.8] + [0.0] * 6, [0.9] + [0.0] * 7, [0.5, 0.4, 0.3] + [0.0] * 5, [1.0] * 8]
    )
    plan = policy.plan(real, rows, padded)
    assert plan.uniform and plan.lengths == [K] * rows and plan.tokens == rows * (K + 1)
    # the uniform step no longer fits the largest graph: plain drafts
    assert not policy.uniform_fits(rows, rows, K - 1)  # a request near max_model_len
    assert not DraftPolicy(K, graphs("FULL_AND_PIECEWISE", 35), cost=cost).uniform_fits(4, 4, K)
    assert not DraftPolicy(K, graphs("PIECEWISE", 512), cost=cost).uniform_fits(4, 4, K)
    assert not policy.uniform_fits(4, 3, K)  # a request without a draft (prefill)


def test_steps_stay_within_the_largest_graph() -> None:
    policy = DraftPolicy(
        K, graphs("FULL_AND_PIECEWISE", 40), cost=learned(lambda n: 0.01, ("piecewise",))
    )
    plan = policy.plan(sure(10), num_rows=10)
    assert plan.tokens == 40 and sum(plan.lengths) == 30


def test_prefers_requests_whose_drafts_get_accepted() -> None:
    policy = DraftPolicy(K, graphs(), cost=learned(lambda n: 0.010 + 0.0015 * n))
    c = cands([[1.0] * 4, [1.0] * 4])
    for _ in range(6):  # r0 accepts its whole draft, r1 nothing
        policy.acceptance.observe("r0", np.ones(4), 4)
        policy.acceptance.observe("r1", np.ones(4), 0)
    plan = policy.plan(c, num_rows=2)
    assert plan.lengths[0] == 4 and plan.lengths[1] == 0


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_more_cost_per_token_never_means_more_drafts(p: float) -> None:
    kept = []
    for slope in [0.0, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.02, 0.1]:
        policy = DraftPolicy(K, graphs(), cost=learned(lambda n, s=slope: 0.010 + s * n))
        kept.append(sum(policy.plan(sure(6, p=p), num_rows=6).lengths))
    assert kept == sorted(kept, reverse=True) and kept[0] == 6 * K, kept
    if p < 0.9:  # (a token sure to pass always pays where a step has a fixed cost)
        assert kept[-1] == 0, kept


def test_likelier_drafts_never_mean_fewer_drafts() -> None:
    cost = learned(lambda n: 0.010 + 0.001 * n)
    kept = [
        sum(DraftPolicy(K, graphs(), cost=cost).plan(sure(4, p=p), num_rows=4).lengths)
        for p in [0.05, 0.2, 0.4, 0.6, 0.8, 1.0]
    ]
    assert kept == sorted(kept) and kept[-1] > 0, kept


def test_a_fixed_budget_wins() -> None:
    # the user's budget: the most valuable tokens that fit, whatever the cost
    policy = DraftPolicy(
        K, graphs(), step_token_budget=2 + 3, cost=learned(lambda n: 0.001 * (1 + n))
    )
    plan = policy.plan(cands([[1.0, 0.9, 0.2], [0.95, 0.3, 0.3]]), num_rows=2)
    assert plan.lengths == [2, 1]
    assert DraftPolicy(K, graphs(), step_token_budget=4).plan(sure(5, 1), 5).lengths == [0] * 5
    assert DraftPolicy(K, graphs(), step_token_budget=0).step_cap() == 0


# ------------------------------------------------------------ learning online


def drive(
    policy: DraftPolicy,
    clock: list[float],
    step_seconds: Callable[[int], float],
    accepted: Callable[[int, int], int],
    steps: int,
    rows: int = 4,
) -> list[int]:
    """Run the policy against a synthetic engine: each step costs
    ``step_seconds(tokens)``; request i accepts ``accepted(i, drafted)``.
    Returns the draft tokens chosen per step."""
    req = [f"r{i}" for i in range(rows)]
    sampled = [(r, 1) for r in req]
    chosen = []
    for step in range(steps):
        policy.start_step(sampled if step else [], had_prefill=step == 0)
        c = cands([[0.9] * K for _ in req])
        plan = policy.plan(c, rows)
        policy.record(c, plan.lengths)
        chosen.append(sum(plan.lengths))
        clock[0] += step_seconds(plan.tokens)
        sampled = [(r, 1 + accepted(i, n)) for i, (r, n) in enumerate(zip(req, plan.lengths))]
    return chosen


def test_learns_that_drafts_do_not_pay() -> None:
    clock = [0.0]
    policy = DraftPolicy(K, graphs(), clock=lambda: clock[0])
    # each token costs a whole step's fixed part; nothing gets accepted
    chosen = drive(policy, clock, lambda n: 0.01 + 0.01 * n, lambda i, n: 0, 300)
    assert chosen[0] == 4 * K  # nothing known yet: everything
    late = chosen[100:]
    assert sum(c == 0 for c in late) > 0.9 * len(late), late
    assert policy.stats.observed > 250


def test_learns_that_long_drafts_pay_when_steps_are_flat() -> None:
    clock = [0.0]
    policy = DraftPolicy(K, graphs(), clock=lambda: clock[0])
    chosen = drive(policy, clock, lambda n: 0.02 + 0.00001 * n, lambda i, n: n if i < 2 else 0, 300)
    late = chosen[100:]
    # requests 0 and 1 accept everything: at least their whole drafts
    assert sum(c >= 2 * K for c in late) > 0.9 * len(late), late


def test_steps_with_a_prefill_or_idle_time_teach_nothing() -> None:
    clock = [0.0]
    policy = DraftPolicy(K, graphs(), clock=lambda: clock[0])
    policy.start_step([], had_prefill=True)
    clock[0] += 5.0
    policy.start_step([("a", 1)], had_prefill=True)  # a prompt ran: not a decode step
    assert not policy.cost.known("eager")
    for _ in range(5):
        clock[0] += 0.01
        policy.start_step([("a", 1)], had_prefill=False)
    assert policy.cost.known("eager") and policy.stats.observed == 5
    clock[0] += 30.0  # the engine sat idle
    policy.start_step([("a", 1)], had_prefill=False)
    assert policy.stats.dropped == 1
    assert float(policy.cost.cost("eager", 1)) == pytest.approx(0.01)


def test_explores_stale_sizes() -> None:
    clock = [0.0]
    policy = DraftPolicy(K, graphs(), clock=lambda: clock[0], explore_every=4, stale_after=8)
    chosen = drive(policy, clock, lambda n: 0.01 + 0.01 * n, lambda i, n: 0, 200)
    late = chosen[100:]
    assert 0 < sum(c > 0 for c in late) < 0.2 * len(late), late  # rare, not never


# ------------------------------------------------------------ the models


def test_step_shapes_follow_vllms_dispatcher() -> None:
    assert step_shape("NONE", 0, 10, True) == "eager"
    assert step_shape("FULL_AND_PIECEWISE", 512, 99, True) == "full"
    assert step_shape("FULL_AND_PIECEWISE", 512, 99, False) == "piecewise"
    assert step_shape("FULL_AND_PIECEWISE", 512, 513, True) == "eager"
    assert step_shape("FULL", 512, 7, False) == "full"
    assert step_shape("FULL_DECODE_ONLY", 512, 7, False) == "eager"
    assert step_shape("PIECEWISE", 512, 7, True) == "piecewise"
    assert graph_step_shape("FULL_AND_PIECEWISE", 512, True) == "full"
    assert graph_step_shape("FULL_AND_PIECEWISE", 512, False) == "piecewise"
    assert graph_step_shape("FULL", 0, True) == "eager"  # no graph captured


def test_cost_curve_fits_a_line_and_follows_the_machine() -> None:
    model = StepCostModel()
    for n in (1, 10, 100, 50, 20):
        model.observe("eager", n, 0.010 + 0.0002 * n)
    a, b = model.line("eager")
    assert a == pytest.approx(0.010) and b == pytest.approx(0.0002)
    n = np.arange(0, 400)
    assert np.all(np.diff(model.cost("eager", n)) >= 0)  # monotonic
    # noise cheaper at larger sizes never makes a negative slope
    noisy = StepCostModel()
    for n, t in ((1, 0.02), (2, 0.02), (30, 0.01), (31, 0.011)):
        noisy.observe("eager", n, t)
    assert noisy.line("eager")[1] == 0.0
    for _ in range(300):  # a long quiet period
        model.observe("eager", 1, 0.010 + 0.0002)
        model.observe("eager", 40, 0.010 + 0.0002 * 40)
    # the machine slows down: the whole line follows within ~100 steps
    for _ in range(60):
        model.observe("eager", 1, 0.020)
        model.observe("eager", 40, 0.020 + 0.0004 * 40)
    assert float(model.cost("eager", 100)) == pytest.approx(0.060, rel=0.05)
    # an unobserved shape borrows the cheapest observed one
    assert float(model.cost("full", 100)) == pytest.approx(float(model.cost("eager", 100)))
    # outliers far above the line are dropped
    assert not model.observe("eager", 10, 1.0)


def test_cost_curve_round_trips_through_a_file(tmp_path) -> None:
    model = learned(lambda n: 0.01 + 0.0001 * n, ("full", "piecewise"), top=300)
    path = tmp_path / "curve.json"
    path.write_text(json.dumps(model.snapshot()))
    again = StepCostModel.load(path)
    n = np.array([1, 7, 33, 100, 299])
    for s in ("full", "piecewise"):
        assert np.allclose(again.cost(s, n), model.cost(s, n), rtol=1e-3)
    assert not again.known("eager")
    hand = StepCostModel.from_snapshot(
        {"format": "arctic-step-cost/1", "shapes": {"eager": {"tokens": [1, 1000], "ms": [10, 30]}}}
    )
    assert float(hand.cost("eager", 1000)) == pytest.approx(0.030)
    assert float(hand.cost("eager", 500)) == pytest.approx(0.020, rel=1e-3)


def test_acceptance_calibrates_and_never_rises_along_a_draft() -> None:
    model = AcceptanceModel()
    for _ in range(200):  # estimates of 1.0 that pass only the first two tokens
        model.observe("x", np.ones(6), 2)
    v = model.token_values(["y"], np.ones(6), np.array([0, 6]))
    assert v[0] > 0.8 and v[-1] < 0.2
    assert np.all(np.diff(v) <= 0)
    # padded drafts can carry rising estimates: values still never rise
    rising = model.token_values(
        ["y", "z"], np.array([0.3, 0.3, 1.0, 1.0, 1.0]), np.array([0, 4, 5])
    )
    assert np.all(np.diff(rising[:4]) <= 0) and rising[4] > rising[3]
    assert np.allclose(
        segment_cummin(np.array([3.0, 1, 2, 5, 4]), np.array([3, 2])), [3, 1, 1, 5, 4]
    )


def test_acceptance_tells_short_matches_from_long_ones() -> None:
    # the tree's estimates are 1.0 either way; drafts from 4-token matches
    # fail after their first token, drafts from 20-token matches pass
    model = AcceptanceModel()
    for i in range(100):
        model.observe_batch(
            [f"s{i}", f"l{i}"], np.ones(12), np.array([0, 6, 12]), [1, 6], "suffix", [4, 20]
        )
    v = model.token_values(["a", "b"], np.ones(12), np.array([0, 6, 12]), match_lens=[5, 24])
    short, long_ = v[:6], v[6:]
    assert long_[3] > 0.8 and short[3] < 0.2
    unknown = model.token_values(["c"], np.ones(6), np.array([0, 6]))  # no match length
    assert 0.2 < unknown[3] <= 1.0  # its own (untrained) cells: the prior


def test_a_request_that_runs_well_never_gets_values_above_one() -> None:
    model = AcceptanceModel()
    for _ in range(100):  # others pass one token, this request every draft whole
        model.observe("other", np.ones(4), 1)
        model.observe("good", np.ones(4), 4)
    assert model.factor("good") > 1.3
    v = model.token_values(["good"], np.ones(4), np.array([0, 4]))
    assert np.all(v <= 1.0) and v[0] == pytest.approx(1.0)


def test_request_factor_recovers_without_drafts() -> None:
    model = AcceptanceModel()
    for _ in range(10):
        model.observe("bad", np.ones(4), 0)
    low = model.factor("bad")
    for _ in range(100):
        model.observe("bad", np.zeros(0), 0)  # no draft this step
    assert low < 0.3 and model.factor("bad") > 0.9


drafts = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # request
        st.lists(st.floats(0.0, 1.0), max_size=40),  # estimated probabilities
        st.integers(-1, 80),  # match length
        st.integers(0, 40),  # accepted (clipped to the draft)
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(drafts, min_size=1, max_size=5))
def test_token_values_match_a_per_token_reference(steps: list) -> None:
    """The vectorized values equal a token-by-token reading of the public
    table and factors, after any history of observed drafts."""
    model = AcceptanceModel()
    for step in steps:
        ids = [r for r, _, _, _ in step]
        probs = [np.array(p) for _, p, _, _ in step]
        offsets = np.concatenate(([0], np.cumsum([len(p) for p in probs]))).astype(np.int64)
        flat = np.concatenate(probs) if probs else np.zeros(0)
        mls = [m for _, _, m, _ in step]
        got = model.token_values(ids, flat, offsets, "suffix", mls)
        want = []
        for r, p, ml in zip(ids, probs, mls):
            low = 1.0
            for j, pj in enumerate(p):
                v = model.calibrated(np.array([pj]), np.array([j + 1]), "suffix", np.array([ml]))
                low = min(low, float(v[0]) * model.factor(r))
                want.append(low)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        accepted = [min(a, len(p)) for (_, _, _, a), p in zip(step, probs)]
        if len(set(ids)) == len(ids):  # one draft per request and step, as engines give
            model.observe_batch(
                ids, flat, offsets, np.array(accepted, dtype=np.int64), "suffix", mls
            )


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: DraftPolicy(-1), ValueError),
        (lambda: DraftPolicy(K, step_token_budget=-5), ValueError),
        (lambda: DraftPolicy(K, max_step_tokens=0), ValueError),
        (lambda: DraftPolicy(K, graphs()).plan(sure(3), num_rows=2), ValueError),
        (lambda: DraftPolicy(K, graphs()).plan(sure(2), 2, sure(2, K - 1)), ValueError),
        (lambda: Candidates(["a"], np.ones(2), np.array([0, 3]), ["suffix"]), ValueError),
        (lambda: Candidates(["a"], np.ones(2), np.array([0, 2]), []), ValueError),
        (lambda: DraftPolicy(K, graphs()).plan(cands([[1.5]]), 1), ValueError),
        (lambda: DraftPolicy(K, graphs()).plan(cands([[float("nan")]]), 1), ValueError),
        (lambda: Candidates(["a"], np.ones(2), np.array([1, 2]), ["suffix"]), ValueError),
        (
            lambda: Candidates(["a", "b"], np.ones(2), np.array([0, 3, 2]), ["suffix"] * 2),
            ValueError,
        ),
        (lambda: StepCostModel().cost("eager", [1.0, float("nan")]), ValueError),
        (lambda: StepCostModel().cost("eager", float("inf")), ValueError),
        (lambda: DraftPolicy(K, graphs()).plan(cands([[1.0]], source="eagle"), 1), KeyError),
        (lambda: StepCostModel().observe("cuda", 3, 0.1), KeyError),
        (lambda: StepCostModel().observe("eager", 0, 0.1), ValueError),
        (lambda: StepCostModel().observe("eager", 2.5, 0.1), TypeError),
        (lambda: StepCostModel().observe("eager", 3, float("nan")), ValueError),
        (lambda: StepCostModel().observe("eager", 3, -1.0), ValueError),
        (lambda: StepCostModel().cost("eager", -1), ValueError),
        (lambda: StepCostModel(forget=0), ValueError),
        (lambda: StepCostModel().line("full"), KeyError),
        (lambda: StepCostModel.from_snapshot({"shapes": {}}), ValueError),
        (
            lambda: StepCostModel.from_snapshot(
                {"format": "arctic-step-cost/1", "shapes": {"eager": {"tokens": [1], "ms": [-2]}}}
            ),
            ValueError,
        ),
        (lambda: StepCostModel.load("/no/such/curve.json"), ValueError),
        (lambda: step_shape("SOMETIMES", 512, 3, True), ValueError),
        (lambda: AcceptanceModel().observe("a", np.ones(2), 3), ValueError),
        (lambda: AcceptanceModel().observe("a", np.ones(2), 1.0), TypeError),
        (lambda: AcceptanceModel(request_memory=1.0), ValueError),
        (lambda: Candidates(["a"], np.ones(1), np.array([0, 1]), ["suffix"], [3, 4]), ValueError),
    ],
)
def test_bad_input_raises_typed_errors(call: Callable[[], object], error: type) -> None:
    with pytest.raises(error):
        call()
