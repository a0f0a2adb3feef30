"""Memory of the suffix cache through eviction: evicted responses free their
tokens, and an emptied cache holds what a new one holds."""

from __future__ import annotations

import numpy as np

from arctic_inference_core.suffix import SuffixDecodingCache


def _cycle(cache: SuffixDecodingCache, responses: list[list[int]], rounds: int) -> None:
    for i in range(rounds):
        rid = f"r{i}"
        cache.start_request(rid, [1, 2, 3])  # evicts the oldest beyond the limit
        cache.add_active_response(rid, responses[i % len(responses)])
        cache.stop_request(rid)
    cache.check_integrity()


def test_an_emptied_cache_holds_what_a_new_one_holds() -> None:
    rng = np.random.default_rng(0)
    corpus = (rng.zipf(1.3, 20_000) % 500).astype(int).tolist()
    responses = [corpus[s : s + 300] for s in rng.integers(0, 19_000, 40).tolist()]
    empty = SuffixDecodingCache(max_tree_depth=16, max_cached_requests=8).memory_bytes()
    cache = SuffixDecodingCache(max_tree_depth=16, max_cached_requests=8)
    _cycle(cache, responses, 120)
    assert cache.memory_bytes() > empty
    for rid in list(cache.cached_requests):
        cache.evict_cached_response(rid)
    cache.check_integrity()
    assert cache.memory_bytes() == empty


def test_an_evicted_response_frees_its_tokens_while_copies_stay_cached() -> None:
    # The same text over and over, two responses cached: the tree's nodes
    # outlive every evicted copy, so they must read their edges from a copy
    # that is still cached, not keep the evicted one's tokens alive.
    text = [int(t) for t in np.random.default_rng(1).integers(0, 1000, 2000)]
    two = SuffixDecodingCache(max_tree_depth=32, max_cached_requests=2)
    _cycle(two, [text], 2)
    many = SuffixDecodingCache(max_tree_depth=32, max_cached_requests=2)
    _cycle(many, [text], 50)
    assert many.num_cached_tokens() == two.num_cached_tokens() == 2 * len(text)
    # One kept copy of the text would add 4 bytes per token; slot bookkeeping
    # differs by a few bytes only.
    assert many.memory_bytes() - two.memory_bytes() < len(text)


def test_a_stopped_request_keeps_only_its_cached_response() -> None:
    # Its prompt, local tree and per-request indexes go at stop_request.
    response = list(range(300))
    sizes = []
    for prompt_len in (0, 5000):
        for share in (False, True):
            cache = SuffixDecodingCache(max_tree_depth=16, share_active_responses=share)
            cache.start_request("r", [7] * prompt_len)
            cache.add_active_response("r", response)
            cache.speculate("r", None)
            cache.stop_request("r")
            sizes.append(cache.memory_bytes())
    assert abs(sizes[0] - sizes[2]) < 64 and abs(sizes[1] - sizes[3]) < 64
