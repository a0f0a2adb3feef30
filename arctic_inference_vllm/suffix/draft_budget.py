"""Per-step draft trimming so that speculation does not cost throughput.

Verifying a draft token costs the target model one more token of compute.
While a step's total tokens stay small, the forward pass is bound by weight
reads and the extra tokens are nearly free; past that, every draft token
costs real time. So each engine step may verify at most ``step_token_budget``
tokens (running requests plus draft tokens). Over budget, the draft tokens
with the highest expected value are kept: value = estimated probability x
the request's recent acceptance rate. Probabilities never rise along a
chain, so what is kept of each draft is a prefix.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


class DraftBudget:
    def __init__(self, step_token_budget: int, ema: float = 0.5) -> None:
        if step_token_budget < 0:
            raise ValueError(f"step_token_budget must be >= 0, got {step_token_budget}")
        self.step_token_budget = step_token_budget
        self.ema = ema
        self._acceptance: dict[Hashable, float] = {}  # EMA of accepted / drafted
        self._last_len: dict[Hashable, int] = {}

    def observe(self, req_id: Hashable, num_sampled: int) -> None:
        """Record the outcome of the request's previous draft: the engine
        returned ``num_sampled`` tokens = accepted draft tokens + 1."""
        drafted = self._last_len.pop(req_id, 0)
        if drafted:
            rate = min(num_sampled - 1, drafted) / drafted
            prev = self._acceptance.get(req_id, 1.0)
            self._acceptance[req_id] = self.ema * prev + (1.0 - self.ema) * rate

    def forget(self, req_id: Hashable) -> None:
        self._acceptance.pop(req_id, None)
        self._last_len.pop(req_id, None)

    def trim(
        self,
        req_ids: Sequence[Hashable],
        drafts: list[list[int]],
        probs: np.ndarray,
        offsets: np.ndarray,
        num_running: int,
    ) -> list[list[int]]:
        """Cut ``drafts`` (probs flat, split by offsets) to the step budget."""
        allowed = self.step_token_budget - num_running
        total = int(offsets[-1])
        if total > allowed:
            if allowed <= 0:
                drafts = [[] for _ in drafts]
            else:
                lengths = np.diff(offsets)
                rates = np.array([self._acceptance.get(r, 1.0) for r in req_ids])
                value = probs * np.repeat(rates, lengths)
                # Keep the `allowed` most valuable tokens (ties broken by
                # position, so a kept token's whole prefix is kept too).
                order = np.lexsort((np.arange(total), -value))
                keep = np.zeros(total, dtype=bool)
                keep[order[:allowed]] = True
                csum = np.concatenate(([0], np.cumsum(keep)))
                kept = csum[offsets[1:]] - csum[offsets[:-1]]
                drafts = [d[: int(k)] for d, k in zip(drafts, kept)]
        for r, d in zip(req_ids, drafts):
            self._last_len[r] = len(d)
        return drafts
