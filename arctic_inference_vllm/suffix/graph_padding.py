"""Pad drafts so that a small decode step runs as one full CUDA graph.

In vLLM's default ``FULL_AND_PIECEWISE`` CUDA-graph mode, a decode step gets
the full graph only when it is uniform: every request verifies exactly
``num_speculative_tokens`` drafts (a step without drafts is not uniform
either). Suffix drafts vary in length, so unpadded steps run piecewise
graphs with eager attention in between (on an H100 with bench-lm that made
concurrency 1 about 1.5x slower than with full graphs). Padding every draft
to exactly ``num_speculative_tokens`` is one of the draft policy's options
(draft_policy.py), taken when the full graph's step pays more than the
others: first with the suffix tree's own continuation beyond the configured
limits (``max_spec_factor``, ``min_token_prob``), which vLLM accepts when
it is right, then by repeating the last token.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Extension(Protocol):
    """A longer draft of a request: its tokens and their estimated probabilities."""

    @property
    def token_ids(self) -> Sequence[int]: ...
    @property
    def probs(self) -> Sequence[float]: ...


def pad_drafts(
    req_ids: Sequence[Hashable],
    drafts: list[list[int]],
    probs: Sequence[npt.NDArray[np.float64]],
    last_tokens: Sequence[int],
    k: int,
    extend: Callable[[Hashable], Extension],
) -> tuple[list[list[int]], list[npt.NDArray[np.float64]]]:
    """Each draft padded to exactly ``k`` tokens, with each token's estimated
    probability (0 for repeated tokens). ``extend(req_id)`` returns a longer
    draft for the request; it is used when it starts with the draft."""
    out, out_probs = [], []
    for rid, d, p, last in zip(req_ids, drafts, probs, last_tokens):
        p = np.asarray(p, dtype=np.float64)[: len(d)]
        if len(d) < k:
            longer = extend(rid)
            ids = list(longer.token_ids)
            if ids[: len(d)] == d and len(ids) > len(d):
                ext = np.asarray(longer.probs, dtype=np.float64)[len(d) : k]
                d = ids[:k]
                p = np.concatenate([p, ext])
            fill = k - len(d)
            d = d + [d[-1] if d else last] * fill
            p = np.concatenate([p, np.zeros(fill)])
        out.append(d[:k])
        out_probs.append(p[:k])
    return out, out_probs
