"""Suffix decoding: draft tokens by matching the recent context against
cached token sequences (the request's own prompt and output, and the outputs
of earlier requests), with frequency-based probabilities.

Frozen v1 API: :class:`SuffixDecodingCache`, :class:`SuffixDecodingDraft`,
:class:`SuffixDecodingDraftBatch`.
"""

from arctic_inference_core.suffix.cache import (
    SuffixDecodingCache,
    SuffixDecodingDraft,
    SuffixDecodingDraftBatch,
)

__all__ = ["SuffixDecodingCache", "SuffixDecodingDraft", "SuffixDecodingDraftBatch"]
