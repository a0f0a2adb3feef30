"""Where a speculative run's greedy output leaves no speculation's, and
whether that is a near-tie of the two logits (bf16 rounding under another
batch shape) or a real difference.

:func:`divergences` lists, per differing request, the first differing
position and the two tokens; a worker without speculation then scores the
prompt plus the common prefix once (raw logits of the top tokens, see
``vllm_compare.py``), and :func:`classify` says how far apart the two
tokens' logits are, in units of bf16's spacing at that logit (8 bits of
mantissa: 2**(e - 7) for a logit in [2**e, 2**(e + 1)))."""

from __future__ import annotations

import math
from typing import Any

NEAR_TIE_ULPS = 4.0  # a gap of at most this many bf16 steps is a near-tie


def first_difference(a: list[int], b: list[int]) -> int | None:
    """First position where two outputs differ (a length difference counts)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergences(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per speculative result and request whose output differs from the
    ``none`` result of its round and level (both tokens present there)."""
    base = {(r["round"], r["concurrency"]): r["outputs"] for r in results if r["method"] == "none"}
    out = []
    for r in results:
        ref = base.get((r["round"], r["concurrency"]))
        if ref is None or r["method"] == "none":
            continue
        for i, (got, want) in enumerate(zip(r["outputs"], ref)):
            d = first_difference(got, want)
            if d is None or d >= min(len(got), len(want)):
                continue  # identical, or one stopped early (an end token)
            out.append(
                {
                    "method": r["method"],
                    "round": r["round"],
                    "concurrency": r["concurrency"],
                    "request": i,
                    "position": d,
                    "prefix": want[:d],
                    "none_token": want[d],
                    "spec_token": got[d],
                }
            )
    return out


def bf16_ulp(x: float) -> float:
    """bf16's spacing at ``x`` (its smallest normal's below 2**-126)."""
    ax = abs(x)
    if ax < 2.0**-126:
        return 2.0**-133
    return 2.0 ** (math.floor(math.log2(ax)) - 7)


def classify(div: dict[str, Any], top: dict[int, float]) -> dict[str, Any]:
    """``div`` scored: ``top`` maps the best tokens at its position to their
    raw logits (no speculation, prompt plus common prefix)."""
    a, b = div["none_token"], div["spec_token"]
    la, lb = top.get(a), top.get(b)
    out = {**div, "none_logit": la, "spec_logit": lb}
    if la is None or lb is None:
        return {**out, "gap_ulps": None, "near_tie": False}
    gap = abs(la - lb) / bf16_ulp(max(abs(la), abs(lb)))
    return {**out, "gap_ulps": gap, "near_tie": gap <= NEAR_TIE_ULPS}


def summary(scored: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per method and level: differing requests, near-ties, and the gaps."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for s in scored:
        cell = out.setdefault((s["method"], s["concurrency"]), {"n": 0, "near": 0, "gaps": []})
        cell["n"] += 1
        cell["near"] += bool(s["near_tie"])
        cell["gaps"].append(s["gap_ulps"])
    return out
