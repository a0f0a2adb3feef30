"""Ulysses sequence parallelism: the all-to-all layout changes around attention.

A long prompt's tokens are split across the ranks of a process group. Outside
attention every rank holds *a slice of the sequence, all heads*; attention
needs *the whole sequence* per head, so an all-to-all turns the layout into
*the whole sequence, a slice of the heads* (:func:`seq_to_head`) and a second
all-to-all turns the attention output back (:func:`head_to_seq`).

Requires ``torch`` (the optional ``torch`` extra); importing
:mod:`arctic_inference_core` itself never imports torch. See docs/ulysses.md.
"""

from arctic_inference_core._optional import require_torch

require_torch("ulysses")

from arctic_inference_core.ulysses.core import (  # noqa: E402
    UlyssesWork,
    all_gather_seq_lens,
    expand_kv_heads_for,
    head_to_seq,
    seq_to_head,
    seq_to_head_qkv,
)

__all__ = [
    "UlyssesWork",
    "all_gather_seq_lens",
    "expand_kv_heads_for",
    "head_to_seq",
    "seq_to_head",
    "seq_to_head_qkv",
]
