"""vLLM's suffix decoding proposer, running on arctic_inference_core.

A subclass of vLLM's own ``SuffixDecodingProposer`` (so vLLM's type checks
hold) that drafts a whole engine step with one native call
(``SuffixDecodingCache.speculate_batch``, GIL released) instead of a Python
loop over requests, and lets a cost-aware policy (draft_policy.py) choose how
much of those drafts the step verifies: none, the most valuable ones, or all
of them padded to a full CUDA graph (graph_padding.py).

Settings: vLLM's ``suffix_decoding_*`` fields and ``num_speculative_tokens``;
optional ``additional_config={"arctic_inference": {...}}`` keys
``suffix_step_token_budget`` (a fixed cap instead of the policy),
``suffix_step_cost_curve`` (a measured cost curve to start from),
``suffix_num_threads`` and ``suffix_share_active_responses`` (live sharing).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from vllm.v1.spec_decode.suffix_decoding import SuffixDecodingProposer

from arctic_inference_core.suffix import SuffixDecodingCache
from arctic_inference_vllm.settings import adapter_settings
from arctic_inference_vllm.suffix.draft_policy import Candidates, DraftPolicy
from arctic_inference_vllm.suffix.graph_padding import Extension, pad_drafts
from arctic_inference_vllm.suffix.step_cost import StepCostModel


@dataclass
class StepDrafts:
    """One step's suffix drafts before the policy trims them."""

    rows: list[int]  # batch rows that drafted
    cands: Candidates  # their drafts' probabilities (source "suffix")
    drafts: list[list[int]]  # their drafts (capped to the room left)
    last_tokens: list[int]  # each row's last sampled token
    room: list[int]  # most draft tokens each row may take
    sampled: list[tuple[Hashable, int]]  # requests that sampled this step, how many
    had_prefill: bool  # the step also ran prompt tokens


class ArcticSuffixDecodingProposer(SuffixDecodingProposer):
    cache_cls: type[SuffixDecodingCache] = SuffixDecodingCache  # subclasses may record calls

    def __init__(self, vllm_config: Any) -> None:  # no super(): it imports arctic_inference
        config = vllm_config.speculative_config
        assert config is not None, "Speculative config must be set"
        settings = adapter_settings(vllm_config)
        self.num_speculative_tokens = config.num_speculative_tokens
        self.max_tree_depth = config.suffix_decoding_max_tree_depth
        self.max_spec_factor = config.suffix_decoding_max_spec_factor
        self.min_token_prob = config.suffix_decoding_min_token_prob
        self.max_model_len = vllm_config.model_config.max_model_len
        self.suffix_cache = self.cache_cls(
            max_tree_depth=config.suffix_decoding_max_tree_depth,
            max_cached_requests=config.suffix_decoding_max_cached_requests,
            num_threads=settings.suffix_num_threads,
            share_active_responses=settings.suffix_share_active_responses,
        )
        self.policy = make_policy(vllm_config, config.num_speculative_tokens)

    def propose(
        self,
        num_speculative_tokens: int,
        input_batch: Any,
        sampled_token_ids: list[list[int]],
        slot_mappings: Any = None,  # unused
    ) -> list[list[int]]:
        step = self.step_drafts(num_speculative_tokens, input_batch, sampled_token_ids)
        policy = self.policy
        policy.start_step(step.sampled, step.had_prefill)
        out: list[list[int]] = [[] for _ in sampled_token_ids]
        if step.rows:
            n = len(sampled_token_ids)
            padded, uniform = None, None
            if policy.uniform_fits(n, len(step.rows), min(step.room)):
                padded, uniform = self._padded(step, num_speculative_tokens)
            plan = policy.plan(step.cands, n, uniform)
            if plan.uniform and padded is not None and uniform is not None:
                drafts = padded
                policy.record(uniform, [len(d) for d in drafts])
            else:
                drafts = [d[:m] for d, m in zip(step.drafts, plan.lengths)]
                policy.record(step.cands, [len(d) for d in drafts])
            for i, d in zip(step.rows, drafts):
                out[i] = d
        return out

    def step_drafts(
        self, num_speculative_tokens: int, input_batch: Any, sampled_token_ids: list[list[int]]
    ) -> StepDrafts:
        """Feed the step's tokens to the cache and draft for every request
        that sampled (all of it, before any policy); release requests that
        left the batch."""
        cache = self.suffix_cache
        rows: list[int] = []
        req_ids: list[str] = []
        new_tokens: list[list[int]] = []
        room: list[int] = []
        sampled_rows: list[tuple[Hashable, int]] = []
        had_prefill = False
        for i, sampled in enumerate(sampled_token_ids):
            if not sampled:
                had_prefill = True  # partial prefill: nothing sampled, nothing to draft
                continue
            req_id = input_batch.req_ids[i]
            num_tokens = int(input_batch.num_tokens_no_spec[i])
            if req_id not in cache.active_requests:
                # New or resumed: its prompt ran this step. Seed it with
                # everything before this step's tokens (a cached response
                # under the same id is replaced).
                had_prefill = True
                prior = num_tokens - len(sampled)
                cache.start_request(req_id, input_batch.token_ids_cpu[i, :prior])
            else:
                sampled_rows.append((req_id, len(sampled)))
            if num_tokens >= self.max_model_len:
                continue
            rows.append(i)
            req_ids.append(req_id)
            new_tokens.append(sampled)
            room.append(min(num_speculative_tokens, self.max_model_len - num_tokens - 1))

        drafts: list[list[int]] = []
        probs = np.zeros(0)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        match_lens = np.zeros(len(rows), dtype=np.int64)
        if rows:
            batch = cache.speculate_batch(
                req_ids,
                new_tokens,
                max_spec_tokens=num_speculative_tokens,
                max_spec_factor=self.max_spec_factor,
                min_token_prob=self.min_token_prob,
            )
            drafts, probs, offsets = _cap(batch.token_id_lists(), batch.probs, batch.offsets, room)
            match_lens = np.asarray(batch.match_lens, dtype=np.int64)

        # Requests no longer in the batch finished or were preempted.
        for req_id in cache.active_requests - input_batch.req_id_to_index.keys():
            cache.stop_request(req_id)
            self.policy.forget(req_id)
        cands = Candidates(list(req_ids), probs, offsets, ["suffix"] * len(rows), match_lens)
        return StepDrafts(
            rows, cands, drafts, [t[-1] for t in new_tokens], room, sampled_rows, had_prefill
        )

    def _padded(self, step: StepDrafts, k: int) -> tuple[list[list[int]], Candidates]:
        """The uniform option: every draft padded to k tokens, and the
        padded drafts' probabilities."""
        probs = [step.cands.probs_of(i, len(d)) for i, d in enumerate(step.drafts)]
        padded, padded_probs = pad_drafts(
            step.cands.req_ids, step.drafts, probs, step.last_tokens, k, self._longer_draft(k)
        )
        offsets = np.arange(len(padded) + 1, dtype=np.int64) * k
        probs_flat = np.concatenate(padded_probs) if padded_probs else np.zeros(0)
        return padded, Candidates(
            list(step.cands.req_ids), probs_flat, offsets, step.cands.sources, step.cands.match_lens
        )

    def _longer_draft(self, k: int) -> Callable[[Hashable], Extension]:
        """Padding source: the tree's continuation without the length and
        probability limits (see graph_padding.py)."""
        cache: SuffixDecodingCache = self.suffix_cache

        def longer(req_id: Hashable) -> Extension:
            return cache.speculate(
                req_id, None, max_spec_tokens=k, max_spec_factor=float(k), min_token_prob=0.0
            )

        return longer


def make_policy(vllm_config: Any, num_speculative_tokens: int) -> DraftPolicy:
    """The draft policy for an engine: the user's fixed budget if set, else
    cost-aware, starting from the user's measured cost curve if given."""
    settings = adapter_settings(vllm_config)
    curve = settings.suffix_step_cost_curve
    scheduler = getattr(vllm_config, "scheduler_config", None)
    max_tokens = getattr(scheduler, "max_num_batched_tokens", None)
    return DraftPolicy(
        num_speculative_tokens,
        vllm_config.compilation_config,
        step_token_budget=settings.suffix_step_token_budget,
        max_step_tokens=int(max_tokens) if max_tokens else None,
        cost=StepCostModel.load(curve) if curve else None,
    )


def _cap(
    lists: list[list[int]], probs: npt.NDArray[np.float64], offsets: np.ndarray, caps: Sequence[int]
) -> tuple[list[list[int]], npt.NDArray[np.float64], np.ndarray]:
    """Cut each draft to its cap (room left before max_model_len)."""
    lengths = np.diff(offsets)
    caps_arr = np.maximum(np.asarray(caps, dtype=np.int64), 0)
    if np.all(lengths <= caps_arr):
        return lists, probs, offsets
    kept = np.minimum(lengths, caps_arr)
    mask = np.arange(len(probs)) - np.repeat(offsets[:-1], lengths) < np.repeat(kept, lengths)
    new_offsets = np.concatenate(([0], np.cumsum(kept))).astype(np.int64)
    return [d[: int(k)] for d, k in zip(lists, kept)], probs[mask], new_offsets
