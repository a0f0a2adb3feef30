"""The ``arctic`` method's choice of drafts per step, cost-aware.

Each request has one candidate draft: its suffix draft when the draft's
score (expected accepted tokens) is at least the speculator's draft length
(Arctic Inference's rule), else the speculator's greedy draft of
``speculator_tokens`` tokens. The suffix method's policy
(suffix/draft_policy.py) then chooses how many tokens of each candidate the
step verifies, from the tree's probabilities (suffix drafts) and the
speculator's learned per-position acceptance (source ``"speculator"``), and
the step costs it has measured. The speculator runs only for the requests
that keep at least one of its tokens.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arctic_inference_vllm.suffix.draft_policy import Candidates, DraftPolicy
from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer, make_policy


@dataclass
class ArcticPlan:
    """Drafts per batch row; rows in ``speculator`` (row -> tokens) still
    need the speculator's draft, cut to that many tokens."""

    drafts: list[list[int]]
    speculator: dict[int, int]
    rows: list[int]  # rows of the candidates, in order
    cands: Candidates | None


def choose_drafts(
    suffix_drafts: Sequence[list[int]], suffix_scores: Sequence[float], speculator_tokens: int
) -> tuple[list[list[int]], list[bool]]:
    """Keep suffix drafts scoring at least the speculator's draft length;
    returns the kept drafts (others empty) and which rows still need the
    speculator."""
    keep = [bool(d) and s >= speculator_tokens for d, s in zip(suffix_drafts, suffix_scores)]
    return [list(d) if k else [] for d, k in zip(suffix_drafts, keep)], [not k for k in keep]


class ArcticDrafting:
    def __init__(self, vllm_config: Any, num_speculative_tokens: int, with_suffix: bool) -> None:
        self.suffix = ArcticSuffixDecodingProposer(vllm_config) if with_suffix else None
        self.policy: DraftPolicy = (
            self.suffix.policy
            if self.suffix is not None
            else make_policy(vllm_config, num_speculative_tokens)
        )
        self._seen: set[Hashable] = set()  # requests past their prefill (without suffix)

    @property
    def suffix_cache(self) -> Any:
        return None if self.suffix is None else self.suffix.suffix_cache

    def plan(
        self,
        batch: Any,
        sampled_token_ids: list[list[int]],
        room: Sequence[int],
        speculator_tokens: int,
        num_spec_tokens: int,
        off: bool,
    ) -> ArcticPlan:
        """Feed the step to the suffix cache and the policy, then choose."""
        n = len(sampled_token_ids)
        suffix_drafts: list[list[int]] = [[] for _ in range(n)]
        suffix_probs = [np.zeros(0) for _ in range(n)]
        suffix_ml = [-1] * n
        if self.suffix is not None:
            # always called: it feeds the step's tokens to the suffix cache
            sd = self.suffix.step_drafts(0 if off else num_spec_tokens, batch, sampled_token_ids)
            sampled, had_prefill = sd.sampled, sd.had_prefill
            for j, (i, d) in enumerate(zip(sd.rows, sd.drafts)):
                suffix_drafts[i] = d
                suffix_probs[i] = sd.cands.probs_of(j, len(d))
                assert sd.cands.match_lens is not None
                suffix_ml[i] = int(sd.cands.match_lens[j])
        else:
            sampled, had_prefill = self._sampled(batch, sampled_token_ids)
        self.policy.start_step(sampled, had_prefill)
        empty = ArcticPlan([[] for _ in range(n)], {}, [], None)
        if off:
            return empty

        scores = [float(p.sum()) for p in suffix_probs]
        drafts, need = choose_drafts(suffix_drafts, scores, speculator_tokens)
        rows, probs, sources, mls = [], [], [], []
        for i in range(n):
            if room[i] <= 0:  # past the draft limit, or at the model's length
                continue
            if drafts[i]:
                rows.append(i)
                probs.append(suffix_probs[i][: len(drafts[i])])
                sources.append("suffix")
                mls.append(suffix_ml[i])
            elif need[i] and sampled_token_ids[i] and room[i] > 0 and speculator_tokens > 0:
                rows.append(i)
                probs.append(np.ones(min(speculator_tokens, room[i])))
                sources.append("speculator")
                mls.append(-1)
        if not rows:
            return empty
        lengths = [len(p) for p in probs]
        cands = Candidates(
            [batch.req_ids[i] for i in rows],
            np.concatenate(probs),
            np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
            sources,
            np.asarray(mls, dtype=np.int64),
        )
        k = self.policy.k
        uniform = None
        if all(m == k for m in lengths) and self.policy.uniform_fits(n, len(rows), min(lengths)):
            uniform = cands  # every request already drafts exactly k tokens
        plan = self.policy.plan(cands, n, uniform)
        out: list[list[int]] = [[] for _ in range(n)]
        speculator: dict[int, int] = {}
        for i, src, m in zip(rows, sources, plan.lengths):
            if src == "suffix":
                out[i] = drafts[i][:m]
            elif m > 0:
                speculator[i] = m
        return ArcticPlan(out, speculator, rows, cands)

    def record(self, plan: ArcticPlan, drafts: Sequence[Sequence[int]]) -> None:
        """The drafts returned to vLLM (for the next step's learning)."""
        if plan.cands is not None:
            self.policy.record(plan.cands, [len(drafts[i]) for i in plan.rows])

    def _sampled(
        self, batch: Any, sampled_token_ids: list[list[int]]
    ) -> tuple[list[tuple[Hashable, int]], bool]:
        """Without the suffix cache: which requests sampled, and whether the
        step ran prompt tokens (a partial prefill, or a request's first
        token)."""
        present = set(batch.req_id_to_index.keys())
        for r in self._seen - present:
            self.policy.forget(r)
        self._seen &= present
        sampled, had_prefill = [], False
        for i, s in enumerate(sampled_token_ids):
            r = batch.req_ids[i]
            if not s or r not in self._seen:
                had_prefill = True
                if s:
                    self._seen.add(r)
                continue
            sampled.append((r, len(s)))
        return sampled, had_prefill
