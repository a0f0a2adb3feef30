"""Differential tests: the C++ suffix cache against the brute-force reference.

Hypothesis drives random interleavings of start/add/stop/evict/speculate on
small alphabets and depths, where every corner (depth limit, copying past
it, ties, eviction, merges) is hit often. Drafts must be identical: token
ids, parents, probabilities (bit for bit), score and match length.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from suffix_reference import RefSuffixCache

from arctic_inference_core.suffix import SuffixDecodingCache

REQS = ["a", "b", "c", 7]


def tokens(alphabet: int, max_size: int = 12) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, alphabet - 1), max_size=max_size)


def assert_same(got, want, where: str) -> None:
    g = (got.token_ids, got.parents, got.probs, got.score, got.match_len)
    w = (want.token_ids, want.parents, want.probs, want.score, want.match_len)
    assert g == w, f"{where}: native {g} != reference {w}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_reference(data: st.DataObject) -> None:
    depth = data.draw(st.integers(1, 6), label="depth")
    alphabet = data.draw(st.integers(1, 3), label="alphabet")
    max_cached = data.draw(st.sampled_from([-1, 0, 1, 2, 3]), label="max_cached")
    share = data.draw(st.booleans(), label="share")
    native = SuffixDecodingCache(depth, max_cached, share_active_responses=share)
    ref = RefSuffixCache(depth, max_cached, share)

    for step in range(data.draw(st.integers(1, 30), label="steps")):
        op = data.draw(st.sampled_from(["start", "add", "add", "stop", "evict", "spec", "spec"]))
        active = sorted(ref.local, key=str)
        if op == "start" or not active:
            free = [r for r in REQS if r not in ref.local]
            if not free:
                continue
            rid = data.draw(st.sampled_from(free))
            prompt = data.draw(tokens(alphabet, 16))
            native.start_request(rid, np.array(prompt, dtype=np.int64))
            ref.start_request(rid, prompt)
        elif op == "add":
            rid = data.draw(st.sampled_from(active))
            toks = data.draw(tokens(alphabet))
            native.add_active_response(rid, toks)
            ref.add_active_response(rid, toks)
        elif op == "stop":
            rid = data.draw(st.sampled_from(active))
            native.stop_request(rid)
            ref.stop_request(rid)
        elif op == "evict":
            cached = sorted(ref.cached, key=str)
            if not cached:
                continue
            rid = data.draw(st.sampled_from(cached))
            native.evict_cached_response(rid)
            ref.evict_cached_response(rid)
        else:
            rid = data.draw(st.sampled_from(active))
            own = ref.local[rid]
            kind = data.draw(st.sampled_from(["none", "tail", "strided", "random", "short"]))
            if kind == "none":
                ctx_native, ctx_ref = None, None
            elif kind == "tail":
                ctx_ref = own[-(depth + 2) :]
                ctx_native = np.array(ctx_ref, dtype=np.int32)
            elif kind == "strided":
                ctx_ref = own[-depth:]
                ctx_native = np.repeat(np.array(ctx_ref, dtype=np.int64), 2)[::2]
            elif kind == "short":
                ctx_ref = own[-data.draw(st.integers(0, depth)) :] if own else []
                ctx_native = list(ctx_ref)
            else:
                ctx_ref = data.draw(tokens(alphabet, depth + 2))
                ctx_native = list(ctx_ref)
            kwargs = dict(
                max_spec_tokens=data.draw(st.one_of(st.none(), st.integers(0, 10))),
                max_spec_factor=data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
                max_spec_offset=data.draw(st.sampled_from([-1.0, 0.0, 1.0, 2.5])),
                min_token_prob=data.draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0])),
                use_tree_spec=data.draw(st.booleans()),
            )
            got = native.speculate(rid, ctx_native, **kwargs)
            want = ref.speculate(rid, ctx_ref, **kwargs)
            assert_same(got, want, f"step {step} {kind} {kwargs}")
        native.check_integrity()
        assert set(native.active_requests) == set(ref.local)
        assert list(native.cached_requests) == list(ref.cached)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_batch_matches_single_calls(data: st.DataObject) -> None:
    depth = data.draw(st.integers(1, 6))
    alphabet = data.draw(st.integers(1, 3))
    threads = data.draw(st.sampled_from([1, 2, 3]))
    a, b = SuffixDecodingCache(depth, num_threads=threads), SuffixDecodingCache(depth)
    # Enough requests that a threaded batch really splits across workers.
    reqs = REQS + [f"x{i}" for i in range(data.draw(st.integers(0, 60)))]
    reqs = reqs[: data.draw(st.integers(1, len(reqs)))]
    for r in reqs:
        prompt = data.draw(tokens(alphabet, 16))
        a.start_request(r, prompt)
        b.start_request(r, prompt)
    for _ in range(data.draw(st.integers(1, 6))):
        new = [data.draw(tokens(alphabet, 5)) for _ in reqs]
        use_ctx = data.draw(st.booleans())
        ctxs = [data.draw(tokens(alphabet, depth + 1)) for _ in reqs] if use_ctx else None
        k = data.draw(st.integers(0, 8))
        tree = data.draw(st.booleans())
        batch = a.speculate_batch(reqs, new, ctxs, max_spec_tokens=k, use_tree_spec=tree)
        assert len(batch) == len(reqs)
        lists = batch.token_id_lists()
        for i, r in enumerate(reqs):
            b.add_active_response(r, new[i])
            want = b.speculate(r, ctxs[i] if ctxs else None, max_spec_tokens=k, use_tree_spec=tree)
            assert_same(batch[i], want, f"batch entry {i}")
            assert lists[i] == want.token_ids
    a.check_integrity()
