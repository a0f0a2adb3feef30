"""Bad input gets a clear typed error, and the cache stays usable afterwards."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from arctic_inference_core.suffix import SuffixDecodingCache


@pytest.fixture
def cache() -> SuffixDecodingCache:
    c = SuffixDecodingCache(max_tree_depth=8, max_cached_requests=4)
    c.start_request("r", [1, 2, 3, 1, 2, 3])
    return c


def still_works(c: SuffixDecodingCache) -> None:
    c.add_active_response("r", [1, 2])
    assert c.speculate("r", None).token_ids == [3, 1, 2]
    c.check_integrity()


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda c: c.speculate("nope", [1]), KeyError, "not active"),
        (lambda c: c.add_active_response("nope", [1]), KeyError, "not active"),
        (lambda c: c.stop_request("nope"), KeyError, "not active"),
        (lambda c: c.evict_cached_response("nope"), KeyError, "no cached response"),
        (lambda c: c.start_request("r", [1]), ValueError, "already active"),
        (lambda c: c.start_request("x", [1, -1]), ValueError, r"\[0, 2\*\*31 - 1\]"),
        (lambda c: c.start_request("x", [2**31]), ValueError, r"\[0, 2\*\*31 - 1\]"),
        (lambda c: c.start_request("x", [2**70]), ValueError, r"\[0, 2\*\*31 - 1\]"),
        (lambda c: c.start_request("x", np.array([1.0, 2.0])), TypeError, "integer dtype"),
        (lambda c: c.start_request("x", np.zeros((2, 2), np.int32)), ValueError, "1-D"),
        (lambda c: c.start_request("x", np.array([5, 2**40])), ValueError, r"2\*\*31"),
        (lambda c: c.start_request("x", None), TypeError, "got None"),
        (lambda c: c.start_request("x", "abc"), TypeError, "str"),
        (lambda c: c.start_request("x", [1, 2.5]), TypeError, "float"),
        (lambda c: c.start_request("x", [True]), TypeError, "bool"),
        (lambda c: c.start_request(["unhashable"], [1]), TypeError, "hashable"),
        (lambda c: c.add_active_response("r", -3), ValueError, r"2\*\*31"),
        (lambda c: c.add_active_response("r", 1.5), TypeError, "float"),
        (lambda c: c.speculate("r", None, max_spec_tokens=-1), ValueError, "max_spec_tokens"),
        (lambda c: c.speculate("r", None, max_spec_tokens=2**40), ValueError, "max_spec_tokens"),
        (lambda c: c.speculate("r", None, max_spec_tokens=2.0), TypeError, "max_spec_tokens"),
        (lambda c: c.speculate("r", None, max_spec_factor=-0.5), ValueError, "max_spec_factor"),
        (
            lambda c: c.speculate("r", None, max_spec_factor=float("nan")),
            ValueError,
            "max_spec_factor",
        ),
        (
            lambda c: c.speculate("r", None, max_spec_offset=float("inf")),
            ValueError,
            "max_spec_offset",
        ),
        (lambda c: c.speculate("r", None, min_token_prob=1.5), ValueError, "min_token_prob"),
        (lambda c: c.speculate("r", None, min_token_prob=-0.1), ValueError, "min_token_prob"),
        (lambda c: c.speculate("r", None, min_token_prob="0.1"), TypeError, "min_token_prob"),
        (lambda c: c.speculate("r", np.array([[1, 2]])), ValueError, "1-D"),
        (lambda c: c.speculate("r", np.array([1.0])), TypeError, "integer dtype"),
        (lambda c: c.speculate_batch(["r", "nope"], [[1], [2]]), KeyError, "not active"),
        (lambda c: c.speculate_batch(["r"], [[1], [2]]), ValueError, "2 entries for 1"),
        (lambda c: c.speculate_batch(["r"], [[-1]]), ValueError, r"2\*\*31"),
        (lambda c: c.speculate_batch(["r"], [[0.5]]), TypeError, "ints"),
        (lambda c: c.speculate_batch(["r"], None, [None]), TypeError, "contexts"),
        (lambda c: c.speculate_batch(["r", "r"], [[1], [2]]), ValueError, "twice"),
        (
            lambda c: c.speculate_batch(["r"], [[1]], min_token_prob=2.0),
            ValueError,
            "min_token_prob",
        ),
    ],
)
def test_bad_input_is_rejected_cleanly(cache, call, exc, match) -> None:
    before = cache.num_cached_tokens()
    with pytest.raises(exc, match=match):
        call(cache)
    assert cache.num_cached_tokens() == before, "a rejected call must not change the cache"
    still_works(cache)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"max_tree_depth": 0}, ValueError),
        ({"max_tree_depth": -5}, ValueError),
        ({"max_tree_depth": 5000}, ValueError),
        ({"max_tree_depth": 2.5}, TypeError),
        ({"max_cached_requests": -2}, ValueError),
        ({"max_cached_requests": 2**40}, ValueError),
        ({"max_cached_requests": None}, TypeError),
    ],
)
def test_bad_constructor_arguments(kwargs, exc) -> None:
    with pytest.raises(exc):
        SuffixDecodingCache(**kwargs)


def test_huge_max_spec_tokens_is_bounded_by_the_data() -> None:
    c = SuffixDecodingCache(max_tree_depth=4)
    c.start_request("r", list(range(100)) + [0, 1, 2, 3])
    d = c.speculate("r", None, max_spec_tokens=2**31 - 1, max_spec_factor=1e9)
    assert d.token_ids == list(range(4, 100)) + [0, 1, 2, 3]


def test_accepted_token_input_forms() -> None:
    c = SuffixDecodingCache(max_tree_depth=8)
    base = np.arange(40, dtype=np.int64)
    c.start_request("r", base[::2])  # strided int64
    c.add_active_response("r", np.array([0, 2], dtype=np.int32))
    c.add_active_response("r", (4, 6))
    c.add_active_response("r", 8)
    c.add_active_response("r", [np.int64(10)])
    c.add_active_response("r", np.array([], dtype=np.int64))
    c.add_active_response("r", [])
    assert c.speculate("r", None, max_spec_tokens=3).token_ids == [12, 14, 16]
    assert c.speculate("r", range(6, 12, 2), max_spec_tokens=2).token_ids == [12, 14]


def test_restart_of_a_cached_request_replaces_its_response() -> None:
    c = SuffixDecodingCache(max_tree_depth=8)
    c.start_request("r", [])
    c.add_active_response("r", [5, 6, 7])
    c.stop_request("r")
    c.start_request("r", [])  # same id again: old response evicted first
    c.add_active_response("r", [5, 9])
    c.start_request("q", [5])
    # A running request's response is not shared yet; the old one is gone.
    assert c.speculate("q", None).token_ids == []
    c.stop_request("r")
    assert c.speculate("q", None).token_ids == [9]
    c.check_integrity()


def test_rejected_restart_keeps_the_cached_response() -> None:
    c = SuffixDecodingCache(max_tree_depth=8)
    c.start_request("r", [])
    c.add_active_response("r", [5, 6, 7])
    c.stop_request("r")
    with pytest.raises(ValueError):
        c.start_request("r", [1, -2])
    assert list(c.cached_requests) == ["r"] and list(c.active_requests) == []
    c.start_request("q", [5])
    assert c.speculate("q", None, max_spec_factor=2.0).token_ids == [6, 7]
    c.check_integrity()


def test_fifo_eviction_and_disabled_global_cache() -> None:
    c = SuffixDecodingCache(max_tree_depth=8, max_cached_requests=2)
    for r in "abc":
        c.start_request(r, [])
        c.stop_request(r)
    assert list(c.cached_requests) == ["b", "c"]
    assert set(c.active_requests) == set()
    off = SuffixDecodingCache(max_tree_depth=8, max_cached_requests=0)
    off.start_request("a", [1, 2])
    off.add_active_response("a", [1, 2])
    off.stop_request("a")
    assert list(off.cached_requests) == []
    off.start_request("b", [1])
    assert off.speculate("b", None).token_ids == []


def test_evicted_requests_release_memory() -> None:
    rng = np.random.default_rng(0)
    c = SuffixDecodingCache(max_tree_depth=32)
    empty = c.memory_bytes()
    for i in range(50):
        c.start_request(i, rng.integers(0, 1000, 300))
        c.add_active_response(i, rng.integers(0, 1000, 300))
        c.stop_request(i)
    full = c.memory_bytes()
    assert c.num_cached_tokens() == 50 * 300
    for i in range(50):
        c.evict_cached_response(i)
    c.check_integrity()
    assert c.num_cached_tokens() == 0
    # Capacity of the node pool is kept for reuse; everything else is freed.
    left = c.memory_bytes()
    assert left < empty + (full - empty) * 0.6, (empty, full, left)
    # The freed capacity is reused: refilling does not grow memory much.
    for i in range(50):
        c.start_request(i, rng.integers(0, 1000, 300))
        c.add_active_response(i, rng.integers(0, 1000, 300))
        c.stop_request(i)
    assert c.memory_bytes() < full * 1.1
    del c
    gc.collect()


def test_stopped_requests_free_their_local_tree() -> None:
    rng = np.random.default_rng(1)
    c = SuffixDecodingCache(max_tree_depth=32, max_cached_requests=0)
    base = c.memory_bytes()
    for i in range(20):
        c.start_request(i, rng.integers(0, 1000, 2000))
        c.stop_request(i)
    assert c.memory_bytes() < base + 4096
    assert c.num_cached_tokens() == 0


def test_concurrent_threads_do_not_corrupt_the_cache() -> None:
    c = SuffixDecodingCache(max_tree_depth=16)
    rng = np.random.default_rng(2)
    prompts = {t: rng.integers(0, 50, 200) for t in range(4)}
    for t, p in prompts.items():
        c.start_request(t, p)

    def worker(t: int) -> None:
        for i in range(300):
            c.add_active_response(t, [int(prompts[t][i % 200])])
            c.speculate(t, None)
            c.speculate_batch([t], [[1]])

    threads = [threading.Thread(target=worker, args=(t,)) for t in prompts]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    c.check_integrity()
    assert c.num_cached_tokens() == 4 * (200 + 600)  # prompts + responses, local trees
    for t in prompts:
        c.stop_request(t)
    c.check_integrity()
    assert c.num_cached_tokens() == 4 * 600  # responses, now in the global tree
