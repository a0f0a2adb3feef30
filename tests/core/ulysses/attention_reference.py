"""Single-process reference attention for the Ulysses tests (CPU and GPU)."""

from __future__ import annotations

import torch

D = 8  # head_dim


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[T, Hq, D] x [T, Hkv, D] -> [T, Hq, D], standard GQA (q head i uses kv head i // (Hq // Hkv))."""
    t, hq, d = q.shape
    group = hq // k.shape[1]
    k = k.repeat_interleave(group, dim=1).double()
    v = v.repeat_interleave(group, dim=1).double()
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) / d**0.5
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def full_inputs(seed: int, total: int, hq: int, hkv: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(total, h, D, generator=g) for h in (hq, hkv, hkv))
