"""The docs' engine example: drafting with the core is lossless with a real
Hugging Face model and saves forward passes on repetitive text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "docs" / "examples"))
import hf_draft_verify as ex  # noqa: E402

from arctic_inference_core.suffix import SuffixDecodingCache  # noqa: E402


def test_draft_verify_equals_plain_greedy_and_saves_calls() -> None:
    model = ex.tiny_model(seed=1)
    cache = SuffixDecodingCache(max_tree_depth=16)
    prompts = [[3, 4, 5, 6, 7] * 5, list(range(10, 40)), [9, 9, 2, 9, 9, 2, 9]]
    total_calls = total_tokens = 0
    for i, prompt in enumerate(prompts):
        out, calls = ex.generate(model, prompt, 24, cache, req_id=f"r{i}", k=8)
        assert out == ex.generate_plain(model, prompt, 24)
        total_calls += calls
        total_tokens += len(out)
    # A random model soon repeats itself; suffix drafts must catch that.
    assert total_calls < total_tokens
    assert set(cache.active_requests) == set()
    assert len(cache.cached_requests) == len(prompts)
