"""vLLM's suffix decoding proposer, running on arctic_inference_core.

A subclass of vLLM's own ``SuffixDecodingProposer`` (so vLLM's type checks
hold) that drafts a whole engine step with one native call
(``SuffixDecodingCache.speculate_batch``, GIL released) instead of a Python
loop over requests, and trims drafts to a per-step token budget so that
speculation does not slow down busy batches (see draft_budget.py).

Settings: vLLM's ``suffix_decoding_*`` fields and ``num_speculative_tokens``;
optional ``additional_config={"arctic_inference": {"suffix_step_token_budget":
N, "suffix_num_threads": T}}``. Without a budget, a step may verify as many
tokens as the largest captured CUDA graph (so verification never falls back
to eager execution), or 512 when CUDA graphs are off. Small decode steps
are padded to full CUDA graphs (graph_padding.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from vllm.v1.spec_decode.suffix_decoding import SuffixDecodingProposer

from arctic_inference_core.suffix import SuffixDecodingCache
from arctic_inference_vllm.settings import adapter_settings
from arctic_inference_vllm.suffix.draft_budget import DraftBudget
from arctic_inference_vllm.suffix.graph_padding import full_graph_tokens, pad_drafts, should_pad

DEFAULT_STEP_TOKEN_BUDGET = 512  # without CUDA graphs (CPU, enforce_eager)


class ArcticSuffixDecodingProposer(SuffixDecodingProposer):
    cache_cls: type[SuffixDecodingCache] = SuffixDecodingCache  # subclasses may record calls
    pad_to_full_graphs = True  # graph_padding.py; off where drafts are mixed with others

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
        )
        self.compilation_config = vllm_config.compilation_config
        self.fixed_budget = settings.suffix_step_token_budget
        self.budget = DraftBudget(self._step_token_budget())

    def propose(
        self,
        num_speculative_tokens: int,
        input_batch: Any,
        sampled_token_ids: list[list[int]],
        slot_mappings: Any = None,  # unused
    ) -> list[list[int]]:
        cache = self.suffix_cache
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        rows: list[int] = []
        req_ids: list[str] = []
        new_tokens: list[list[int]] = []
        caps: list[int] = []
        for i, sampled in enumerate(sampled_token_ids):
            if not sampled:
                continue  # partial prefill: nothing sampled, nothing to draft
            req_id = input_batch.req_ids[i]
            num_tokens = int(input_batch.num_tokens_no_spec[i])
            if num_tokens >= self.max_model_len:
                continue
            if req_id not in cache.active_requests:
                # New or resumed: seed it with everything before this step's
                # tokens (a cached response under the same id is replaced).
                prior = num_tokens - len(sampled)
                cache.start_request(req_id, input_batch.token_ids_cpu[i, :prior])
            else:
                self.budget.observe(req_id, len(sampled))
            rows.append(i)
            req_ids.append(req_id)
            new_tokens.append(sampled)
            caps.append(min(num_speculative_tokens, self.max_model_len - num_tokens - 1))

        if rows:
            self.budget.step_token_budget = self._step_token_budget()
            batch = cache.speculate_batch(
                req_ids,
                new_tokens,
                max_spec_tokens=num_speculative_tokens,
                max_spec_factor=self.max_spec_factor,
                min_token_prob=self.min_token_prob,
            )
            lists, probs, offsets = _cap(batch.token_id_lists(), batch.probs, batch.offsets, caps)
            trimmed = self.budget.trim(req_ids, lists, probs, offsets, len(sampled_token_ids))
            k = num_speculative_tokens
            # never past the step budget (a user-set one can be smaller than the graph)
            graph = min(full_graph_tokens(self.compilation_config), self.budget.step_token_budget)
            if self.pad_to_full_graphs and should_pad(
                len(sampled_token_ids), len(rows), caps, k, graph
            ):
                trimmed = pad_drafts(
                    req_ids, trimmed, [t[-1] for t in new_tokens], k, self._longer_draft(k)
                )
            for i, d in zip(rows, trimmed):
                drafts[i] = d

        # Requests no longer in the batch finished or were preempted.
        for req_id in cache.active_requests - input_batch.req_id_to_index.keys():
            cache.stop_request(req_id)
            self.budget.forget(req_id)
        return drafts

    def _longer_draft(self, k: int) -> Callable[[Hashable], Sequence[int]]:
        """Padding source: the tree's continuation without the length and
        probability limits (see graph_padding.py)."""
        cache: SuffixDecodingCache = self.suffix_cache

        def longer(req_id: Hashable) -> Sequence[int]:
            draft = cache.speculate(
                req_id, None, max_spec_tokens=k, max_spec_factor=float(k), min_token_prob=0.0
            )
            return draft.token_ids

        return longer

    def _step_token_budget(self) -> int:
        """The configured budget, else the largest CUDA graph size: a bigger
        verification batch runs eagerly, which costs more than its drafts
        save. Read every step because vLLM settles the capture sizes (rounded
        to multiples of 1 + num_speculative_tokens) after this proposer is
        built."""
        if self.fixed_budget is not None:
            return self.fixed_budget
        cc = self.compilation_config
        mode = getattr(cc, "cudagraph_mode", None)
        size = getattr(cc, "max_cudagraph_capture_size", None)
        if mode is None or size is None or str(getattr(mode, "name", mode)) == "NONE":
            return DEFAULT_STEP_TOKEN_BUDGET
        return int(size)


def _cap(
    lists: list[list[int]], probs: np.ndarray, offsets: np.ndarray, caps: list[int]
) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Cut each draft to its cap (room left before max_model_len)."""
    lengths = np.diff(offsets)
    caps_arr = np.maximum(np.asarray(caps, dtype=np.int64), 0)
    if np.all(lengths <= caps_arr):
        return lists, probs, offsets
    kept = np.minimum(lengths, caps_arr)
    mask = np.arange(len(probs)) - np.repeat(offsets[:-1], lengths) < np.repeat(kept, lengths)
    new_offsets = np.concatenate(([0], np.cumsum(kept))).astype(np.int64)
    return [d[: int(k)] for d, k in zip(lists, kept)], probs[mask], new_offsets
