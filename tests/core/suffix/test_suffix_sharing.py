"""Live sharing (share_active_responses): running requests draft from each
other's output at once. Differential tests against the brute-force reference
on concurrent interleavings where requests copy each other's text (as n
samples of one prompt do), with evictions of responses others still draft
from, and the batch entry point against single calls."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from suffix_reference import RefSuffixCache
from test_suffix_differential import assert_same

from arctic_inference_core.suffix import SuffixDecodingCache

REQS = ["a", "b", "c", "d", 5]


def sibling_tokens(data: st.DataObject, ref: RefSuffixCache, alphabet: int) -> list[int]:
    """New tokens: random ones, or a slice of some running response with
    maybe one token changed (siblings share most of their text)."""
    sources = [r for r in ref.response.values() if r]
    if sources and data.draw(st.booleans()):
        src = data.draw(st.sampled_from(sources))
        a = data.draw(st.integers(0, len(src) - 1))
        out = src[a : a + data.draw(st.integers(1, 12))]
        if data.draw(st.booleans()):
            out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, alphabet - 1))
        return out
    return data.draw(st.lists(st.integers(0, alphabet - 1), max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_concurrent_requests_match_reference(data: st.DataObject) -> None:
    depth = data.draw(st.integers(1, 6), label="depth")
    alphabet = data.draw(st.sampled_from([1, 2, 3, 4, 9]), label="alphabet")
    max_cached = data.draw(st.sampled_from([-1, 1, 2, 3]), label="max_cached")
    native = SuffixDecodingCache(depth, max_cached, share_active_responses=True)
    ref = RefSuffixCache(depth, max_cached, share_active_responses=True)
    for step in range(data.draw(st.integers(1, 40), label="steps")):
        op = data.draw(st.sampled_from(["start", "add", "add", "add", "stop", "evict", "spec"]))
        active = sorted(ref.prompt, key=str)
        if op == "start" or not active:
            free = [r for r in REQS if r not in ref.prompt]
            if not free:
                continue
            rid = data.draw(st.sampled_from(free))
            prompt = data.draw(st.lists(st.integers(0, alphabet - 1), max_size=10))
            native.start_request(rid, prompt)
            ref.start_request(rid, prompt)
        elif op == "add":
            rid = data.draw(st.sampled_from(active))
            toks = sibling_tokens(data, ref, alphabet)
            native.add_active_response(rid, toks)
            ref.add_active_response(rid, toks)
        elif op == "stop":
            rid = data.draw(st.sampled_from(active))
            native.stop_request(rid)
            ref.stop_request(rid)
        elif op == "evict":  # often a response that is still growing
            cached = sorted(ref.cached, key=str)
            if not cached:
                continue
            rid = data.draw(st.sampled_from(cached))
            native.evict_cached_response(rid)
            ref.evict_cached_response(rid)
        if op in ("add", "spec", "evict") and ref.prompt:
            # Every running request drafts, as in an engine step.
            for rid in sorted(ref.prompt, key=str):
                kwargs = dict(
                    max_spec_tokens=data.draw(st.sampled_from([None, 3, 10])),
                    min_token_prob=data.draw(st.sampled_from([0.0, 0.1, 0.5])),
                    use_tree_spec=data.draw(st.booleans()),
                )
                ctx = None
                if data.draw(st.integers(0, 4)) == 0:
                    ctx = data.draw(st.lists(st.integers(0, alphabet - 1), max_size=depth + 2))
                got = native.speculate(rid, ctx, **kwargs)
                want = ref.speculate(rid, ctx, **kwargs)
                assert_same(got, want, f"step {step} {rid!r} ctx={ctx} {kwargs}")
        native.check_integrity()
        assert list(native.cached_requests) == list(ref.cached)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_batch_adds_every_request_then_drafts(data: st.DataObject) -> None:
    depth = data.draw(st.integers(1, 6))
    threads = data.draw(st.sampled_from([1, 2]))
    a = SuffixDecodingCache(depth, num_threads=threads, share_active_responses=True)
    b = SuffixDecodingCache(depth, share_active_responses=True)
    reqs = REQS + [f"x{i}" for i in range(data.draw(st.integers(0, 40)))]
    text = data.draw(st.lists(st.integers(0, 2), min_size=1, max_size=30))
    for r in reqs:
        a.start_request(r, text[:3])
        b.start_request(r, text[:3])
    for _ in range(data.draw(st.integers(1, 5))):
        new = []
        for _ in reqs:  # mostly the same text, as siblings write it
            i = data.draw(st.integers(0, len(text) - 1))
            new.append(text[i : i + data.draw(st.integers(0, 4))])
        batch = a.speculate_batch(reqs, new, max_spec_tokens=6)
        for r, toks in zip(reqs, new):
            b.add_active_response(r, toks)
        for i, r in enumerate(reqs):
            assert_same(batch[i], b.speculate(r, None, max_spec_tokens=6), f"entry {i}")
    a.check_integrity()


def test_running_requests_draft_from_each_other_at_once() -> None:
    plan = list(range(100, 140))
    for share in (False, True):
        cache = SuffixDecodingCache(16, share_active_responses=share)
        cache.start_request("leader", [1, 2, 3])
        cache.start_request("follower", [1, 2, 3])
        cache.add_active_response("leader", plan)
        cache.add_active_response("follower", plan[:10])
        draft = cache.speculate("follower", None, max_spec_tokens=8)
        # Shared: the leader's output continues the follower's text at once.
        assert draft.token_ids == (plan[10:18] if share else [])
        assert cache.share_active_responses is share
        # The follower's own text counts once: its prompt is local, its
        # response global (no copy of it in both).
        assert cache.num_cached_tokens() == 3 + 3 + len(plan) + 10
        cache.check_integrity()


def test_copies_past_the_depth_from_another_response() -> None:
    # A 40-token text seen once before, depth 8: the global draft copies the
    # rest of it past the depth, in both modes.
    text = list(range(200, 240))
    for share in (False, True):
        cache = SuffixDecodingCache(8, share_active_responses=share)
        cache.start_request("old", [1])
        cache.add_active_response("old", text)
        cache.stop_request("old")
        cache.start_request("new", [2])
        cache.add_active_response("new", text[:12])
        draft = cache.speculate("new", None, max_spec_tokens=20, max_spec_factor=4.0)
        assert draft.token_ids == text[12:32]
        # Once that response is evicted, nothing is left to copy.
        cache.evict_cached_response("old")
        assert cache.speculate("new", None, max_spec_tokens=20).token_ids == []


def test_evicting_a_growing_response_keeps_it_for_its_request() -> None:
    cache = SuffixDecodingCache(8, share_active_responses=True)
    cache.start_request("r", [1, 2])
    text = [5, 6, 7, 8, 9, 5, 6, 7]
    cache.add_active_response("r", text)
    before = cache.speculate("r", None, max_spec_factor=4).token_ids
    cache.evict_cached_response("r")  # the request runs on, uncached
    assert "r" not in cache.cached_requests
    assert cache.speculate("r", None, max_spec_factor=4).token_ids == before == [8, 9, 5, 6, 7]
    cache.add_active_response("r", [8])
    assert cache.speculate("r", None, max_spec_factor=4).token_ids == [9, 5, 6, 7, 8]
    cache.check_integrity()
    cache.stop_request("r")
    assert cache.num_cached_tokens() == 0


def test_siblings_in_lock_step_take_no_more_memory_than_one_after_another() -> None:
    # Identical samples growing a few tokens at a time each: the edges they
    # share stay whole (a node whose suffixes all went on into its only
    # child merges with it) instead of one node per step and suffix.
    text = [int(t) for t in np.random.default_rng(2).integers(0, 5000, 1500)]
    sizes = []
    for lock_step in (False, True):
        cache = SuffixDecodingCache(32, share_active_responses=True)
        for i in range(3):
            cache.start_request(i, [1])
            if not lock_step:
                cache.add_active_response(i, text)
        for a in range(0, len(text) if lock_step else 0, 9):
            for i in range(3):
                cache.add_active_response(i, text[a : a + 9])
        for i in range(3):
            cache.stop_request(i)
        cache.check_integrity()
        sizes.append(cache.memory_bytes())
    assert sizes[1] < 1.1 * sizes[0]
