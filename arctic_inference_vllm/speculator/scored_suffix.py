"""Suffix drafts with their scores, for the ``arctic`` method.

The arctic method keeps a request's suffix draft only when its score (the
expected number of accepted tokens) is at least the speculator's draft length.
:class:`~arctic_inference_vllm.suffix.proposer.ArcticSuffixDecodingProposer`
returns drafts only, so this subclass records each ``speculate_batch`` result
and scores the drafts it returned (after its caps and step budget trimmed
them: what is kept is always a prefix).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from arctic_inference_core.suffix import SuffixDecodingCache, SuffixDecodingDraftBatch
from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer


class _RecordingCache(SuffixDecodingCache):
    """Remembers the last batch of drafts (one call per engine step)."""

    last: tuple[list[Hashable], SuffixDecodingDraftBatch] | None = None

    def speculate_batch(
        self, req_ids: Sequence[Hashable], *args: Any, **kwargs: Any
    ) -> SuffixDecodingDraftBatch:
        batch = super().speculate_batch(req_ids, *args, **kwargs)
        self.last = (list(req_ids), batch)
        return batch


class ScoredSuffixProposer(ArcticSuffixDecodingProposer):
    cache_cls = _RecordingCache
    pad_to_full_graphs = False  # speculator drafts share the step: it is not uniform anyway

    def scores(self, req_ids: Sequence[Hashable], drafts: Sequence[Sequence[int]]) -> np.ndarray:
        """Score (sum of token probabilities) of each row's draft from the
        last ``propose`` call; 0 for rows it did not draft."""
        out = np.zeros(len(drafts), dtype=np.float64)
        cache = self.suffix_cache
        assert isinstance(cache, _RecordingCache)  # cache_cls
        last, cache.last = cache.last, None
        if last is None:
            return out
        batch_ids, batch = last
        where = {r: j for j, r in enumerate(batch_ids)}
        for i, (r, d) in enumerate(zip(req_ids, drafts)):
            j = where.get(r)
            if j is not None and d:
                start = int(batch.offsets[j])
                out[i] = float(batch.probs[start : start + len(d)].sum())
        return out
