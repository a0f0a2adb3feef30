"""The drafter of the ``arctic`` speculative method (worker side).

vLLM builds it through its ``custom_class`` path (speculator/config.py
rewrote the config) and calls ``load_model(target_model)`` and, after each
step's bookkeeping, ``propose(...)``; patches/speculator_runner.py (applied
here, in the arctic-worker phase) hands it the step's hidden states just
before. Per step:

1. Above ``disable_by_batch_size`` running requests only the first that
   many draft; at ``hard_disable_by_batch_size`` or more, none (Arctic
   Inference's rules; the suffix cache still takes the new tokens, so later
   drafts stay right).
2. Each request's candidate is its suffix draft (with
   ``enable_suffix_decoding``) when the draft's score (expected accepted
   tokens) is at least the speculator's draft length (Arctic Inference's
   rule), else the speculator's draft; the cost-aware draft policy chooses
   how many tokens of each the step verifies (drafting.py).
3. The requests that keep speculator tokens get the speculator's greedy
   draft from their last hidden state and last token, all in one batched
   call (replayed from a CUDA graph on GPU: ``GraphDrafter``).

Drafts are lists of different lengths, which vLLM's custom_class path takes
as is (like suffix and n-gram drafts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from arctic_inference_vllm.patches import Phase, apply_phase
from arctic_inference_vllm.speculator.config import ArcticSettings, check_switch
from arctic_inference_vllm.speculator.step import StepInputs, StepInputsReceiver

if TYPE_CHECKING:
    from arctic_inference_core.speculator import GraphDrafter
    from arctic_inference_vllm.speculator.drafting import ArcticDrafting


def last_sampled_rows(
    sampled_lens: Sequence[int], num_draft_tokens: Sequence[int] | None
) -> list[int]:
    """Row of ``sample_hidden_states`` that produced each request's last
    sampled token. Request ``i`` owns ``num_draft_tokens[i] + 1`` rows (one
    per verified draft token, plus the bonus position) in batch order; its
    last sampled token came from its ``sampled_lens[i]``-th row. Meaningless
    for requests that sampled nothing (partial prefill)."""
    if num_draft_tokens is None:
        return list(range(len(sampled_lens)))
    if len(num_draft_tokens) != len(sampled_lens):
        raise RuntimeError(
            f"arctic proposer: {len(num_draft_tokens)} requests verified drafts but "
            f"{len(sampled_lens)} sampled; vLLM's step layout is not the one checked"
        )
    rows, start = [], 0
    for n_sampled, n_draft in zip(sampled_lens, num_draft_tokens):
        rows.append(start + max(n_sampled, 1) - 1)
        start += n_draft + 1
    return rows


class ArcticProposer(StepInputsReceiver):
    def __init__(self, vllm_config: Any) -> None:
        check_switch()
        apply_phase(Phase.ARCTIC_WORKER)  # before the first step; raises on an unchecked vLLM
        self.settings = ArcticSettings.from_additional_config(vllm_config.additional_config)
        self.model_config = vllm_config.model_config
        self.device_config = vllm_config.device_config
        self.max_model_len: int = vllm_config.model_config.max_model_len
        self.max_num_seqs: int = vllm_config.scheduler_config.max_num_seqs
        # imports vLLM's suffix proposer
        from arctic_inference_vllm.speculator.drafting import ArcticDrafting

        self.drafting: ArcticDrafting = ArcticDrafting(
            vllm_config,
            vllm_config.speculative_config.num_speculative_tokens,
            self.settings.enable_suffix_decoding,
        )
        self.policy = self.drafting.policy  # for diagnostics and the benchmarks
        self.drafter: GraphDrafter | None = None
        self._step: StepInputs | None = None

    @property
    def suffix_cache(self) -> Any:
        """For diagnostics.SuffixCacheInspector."""
        return self.drafting.suffix_cache

    def load_model(self, target_model: Any) -> None:
        """Called by vLLM's runner right after it loads the target model."""
        from arctic_inference_core.speculator import GraphDrafter, load_speculator

        try:
            device = next(target_model.parameters()).device
        except (AttributeError, StopIteration):
            device = self.device_config.device
        spec = load_speculator(self.settings.model, dtype=self.model_config.dtype, device=device)
        spec.check_compatible(
            self.model_config.get_hidden_size(), self.model_config.get_vocab_size()
        )
        # CUDA graphs on GPU (eager launches cost more than the heads' math)
        self.drafter = GraphDrafter(spec, max_batch_size=self.max_num_seqs)

    def set_step(self, step: StepInputs) -> None:
        self._step = step

    def propose(
        self,
        sampled_token_ids: list[list[int]],
        num_tokens_no_spec: Any,
        token_ids_cpu: Any,
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        step, self._step = self._step, None
        if step is None or self.drafter is None:
            raise RuntimeError(
                "arctic proposer: no step inputs or no speculator; vLLM did not run the "
                "arctic runner hook (patches/speculator_runner.py) or load_model"
            )
        n = len(sampled_token_ids)
        batch = step.input_batch
        limit = self.settings.draft_limit(len(batch.req_ids))
        off = step.num_spec_tokens <= 0 or limit == 0

        k = min(self.settings.speculator_tokens, step.num_spec_tokens)
        # requests past the first ``limit`` get no room: no drafts
        room = [
            self.max_model_len - int(num_tokens_no_spec[i]) - 1 if i < limit else 0
            for i in range(n)
        ]
        plan = self.drafting.plan(batch, sampled_token_ids, room, k, step.num_spec_tokens, off)
        drafts = plan.drafts
        rows = sorted(plan.speculator)
        if rows:
            for i, d in zip(rows, self._draft(step, sampled_token_ids, rows, k)):
                drafts[i] = d[: min(room[i], plan.speculator[i])]
        self.drafting.record(plan, drafts)
        return drafts

    def _draft(
        self, step: StepInputs, sampled: list[list[int]], rows: list[int], k: int
    ) -> list[list[int]]:
        import torch

        assert self.drafter is not None
        hidden = step.sample_hidden_states
        expected = len(sampled) + sum(step.num_draft_tokens or ())
        if hidden.shape[0] != expected:
            raise RuntimeError(
                f"arctic proposer: {hidden.shape[0]} sampled hidden states, expected {expected}; "
                "vLLM's step layout is not the one checked"
            )
        at = last_sampled_rows([len(s) for s in sampled], step.num_draft_tokens)
        index = torch.tensor([at[i] for i in rows], dtype=torch.long, device=hidden.device)
        last = torch.tensor([sampled[i][-1] for i in rows], dtype=torch.long, device=hidden.device)
        return self.drafter(hidden.index_select(0, index), last, k).tolist()
