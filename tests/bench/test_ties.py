"""benchlib/ties.py: divergences from no speculation, and the bf16 near-tie
rule that classifies them."""

from __future__ import annotations

import math

import pytest
from benchlib.ties import bf16_ulp, classify, divergences, first_difference, summary


def result(method: str, outputs: list[list[int]], c: int = 1, rnd: int = 0) -> dict:
    return {"method": method, "round": rnd, "concurrency": c, "outputs": outputs}


def test_divergences_name_the_first_differing_token() -> None:
    res = [
        result("none", [[1, 2, 3, 4], [5, 6, 7], [8, 9]]),
        result("suffix", [[1, 2, 9, 4], [5, 6, 7], [8]]),  # differs, same, stopped early
        result("suffix", [[1, 2, 3, 4]], c=16),  # no none at c=16: nothing to compare
    ]
    (d,) = divergences(res)
    assert d == {
        "method": "suffix",
        "round": 0,
        "concurrency": 1,
        "request": 0,
        "position": 2,
        "prefix": [1, 2],
        "none_token": 3,
        "spec_token": 9,
    }
    assert first_difference([1, 2], [1, 2]) is None and first_difference([1], [1, 2]) == 1


@pytest.mark.parametrize(
    "x, ulp", [(1.0, 2**-7), (1.99, 2**-7), (2.0, 2**-6), (-20.0, 2**-3), (0.3, 2**-9)]
)
def test_bf16_spacing(x: float, ulp: float) -> None:
    assert bf16_ulp(x) == ulp
    assert bf16_ulp(0.0) > 0


def test_classify_near_ties_and_real_differences() -> None:
    div = {"method": "suffix", "concurrency": 1, "none_token": 3, "spec_token": 9}
    near = classify(div, {3: 20.0, 9: 19.75, 4: 11.0})  # 2 steps of 0.125
    assert near["gap_ulps"] == pytest.approx(2.0) and near["near_tie"]
    far = classify(div, {3: 20.0, 9: 18.0})  # 16 steps
    assert far["gap_ulps"] == pytest.approx(16.0) and not far["near_tie"]
    outside = classify(div, {3: 20.0, 4: 19.0})  # the drafted token is not even close
    assert outside["gap_ulps"] is None and not outside["near_tie"]
    cells = summary([near, far, outside])
    assert cells[("suffix", 1)]["n"] == 3 and cells[("suffix", 1)]["near"] == 1
    assert not math.isnan(near["none_logit"])
