"""Unit tests of the vLLM adapter's pure-Python parts (no vLLM needed)."""

from __future__ import annotations

import numpy as np
import pytest

from arctic_inference_vllm import envs, versions
from arctic_inference_vllm.draft_budget import DraftBudget


def flat(drafts, probs):
    offsets = np.concatenate(([0], np.cumsum([len(d) for d in drafts]))).astype(np.int64)
    return np.asarray([p for ps in probs for p in ps], dtype=np.float64), offsets


def test_budget_keeps_everything_when_it_fits() -> None:
    b = DraftBudget(step_token_budget=100)
    drafts = [[1, 2, 3], [4, 5]]
    probs, off = flat(drafts, [[1, 0.9, 0.8], [0.5, 0.4]])
    assert b.trim(["a", "b"], drafts, probs, off, num_running=2) == drafts


def test_budget_keeps_the_most_likely_prefixes() -> None:
    b = DraftBudget(step_token_budget=2 + 3)  # 2 running requests, 3 draft tokens
    drafts = [[1, 2, 3], [4, 5, 6]]
    probs, off = flat(drafts, [[1.0, 0.9, 0.2], [0.95, 0.3, 0.3]])
    assert b.trim(["a", "b"], drafts, probs, off, num_running=2) == [[1, 2], [4]]


def test_budget_drops_all_drafts_when_the_batch_alone_fills_it() -> None:
    b = DraftBudget(step_token_budget=4)
    drafts = [[1], [2], [3], [4], []]
    probs, off = flat(drafts, [[1.0], [1.0], [1.0], [1.0], []])
    assert b.trim(list("abcde"), drafts, probs, off, num_running=5) == [[], [], [], [], []]


def test_budget_prefers_requests_whose_drafts_get_accepted() -> None:
    b = DraftBudget(step_token_budget=2 + 2, ema=0.0)
    drafts = [[1, 2], [3, 4]]
    probs, off = flat(drafts, [[1.0, 1.0], [1.0, 1.0]])
    b.trim(["good", "bad"], drafts, probs, off, num_running=2)
    b.observe("good", 3)  # both draft tokens accepted (+1 bonus)
    b.observe("bad", 1)   # none accepted
    assert b.trim(["good", "bad"], drafts, probs, off, num_running=2) == [[1, 2], []]


def test_budget_rejects_negative() -> None:
    with pytest.raises(ValueError):
        DraftBudget(-1)


def test_version_gate() -> None:
    assert versions.is_supported("0.26.0") and versions.is_supported("0.32.0")
    assert versions.is_supported("0.33.1+cu130")
    assert not versions.is_supported("0.25.2") and not versions.is_supported("0.34.0")
    assert not versions.is_supported("1.0.0")
    with pytest.raises(ValueError):
        versions.parse("dev")


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("1", True), ("true", True)])
def test_extras_switch(monkeypatch, value, on) -> None:
    monkeypatch.setenv(envs.EXTRAS_ENV, value)
    assert envs.extras_enabled() is on


def test_extras_switch_rejects_garbage(monkeypatch) -> None:
    monkeypatch.setenv(envs.EXTRAS_ENV, "maybe")
    with pytest.raises(ValueError, match=envs.EXTRAS_ENV):
        envs.extras_enabled()
