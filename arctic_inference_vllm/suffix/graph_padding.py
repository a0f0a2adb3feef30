"""Pad drafts so that a small decode step runs as one full CUDA graph.

In vLLM's default ``FULL_AND_PIECEWISE`` CUDA-graph mode, a decode step gets
the full graph only when it is uniform: every request verifies exactly
``num_speculative_tokens`` drafts. Suffix drafts vary in length, so without
padding nearly every step runs piecewise graphs with eager attention in
between (on an H100 with bench-lm that made concurrency 1 about 1.5x slower
than with full graphs). When the padded step still fits the largest captured
graph (and the step token budget), its cost does not depend on how many of those slots carry real
drafts, so each draft is padded to exactly ``num_speculative_tokens``:
first with the suffix tree's own continuation beyond the configured
limits (``max_spec_factor``, ``min_token_prob``), which vLLM accepts when
it is right, then by repeating the last token.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

FULL_DECODE_MODES = ("FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")


def full_graph_tokens(compilation_config: Any) -> int:
    """Tokens of the largest full decode graph (0 without full graphs)."""
    mode = getattr(compilation_config, "cudagraph_mode", None)
    size = getattr(compilation_config, "max_cudagraph_capture_size", None)
    if mode is None or size is None:
        return 0
    return int(size) if str(getattr(mode, "name", mode)) in FULL_DECODE_MODES else 0


def should_pad(
    num_requests: int, num_drafting: int, caps: Sequence[int], k: int, graph_tokens: int
) -> bool:
    """Pad only when every request drafts, each has room for ``k`` tokens and
    the uniform step (``k + 1`` tokens per request) fits a full graph."""
    return (
        k > 0
        and num_drafting == num_requests > 0
        and min(caps) >= k
        and num_requests * (k + 1) <= graph_tokens
    )


def pad_drafts(
    req_ids: Sequence[Hashable],
    drafts: list[list[int]],
    last_tokens: Sequence[int],
    k: int,
    extend: Callable[[Hashable], Sequence[int]],
) -> list[list[int]]:
    """Each draft padded to exactly ``k`` tokens. ``extend(req_id)`` returns a
    longer draft for the request; it is used when it starts with the draft."""
    out = []
    for rid, d, last in zip(req_ids, drafts, last_tokens):
        if len(d) < k:
            longer = list(extend(rid))
            if longer[: len(d)] == d and len(longer) > len(d):
                d = longer[:k]
            d = d + [d[-1] if d else last] * (k - len(d))
        out.append(d[:k])
    return out
