"""What vLLM's model runner knows about a step and its ``custom_class``
proposer call lacks (the arctic method's speculator needs the hidden states).

patches/speculator_runner.py hands :class:`StepInputs` to a drafter that is a
:class:`StepInputsReceiver`, just before vLLM calls its ``propose``. Nothing
here imports vLLM or the proposer, so the patch depends on this module only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class StepInputs:
    """What vLLM's runner knows about the step and the custom_class call lacks."""

    input_batch: Any  # vLLM's InputBatch: req_ids, num_tokens_no_spec, ...
    sample_hidden_states: torch.Tensor  # [rows, hidden]: the rows logits were computed for
    num_draft_tokens: list[int] | None  # per request, drafts verified this step (None: none)
    num_spec_tokens: int  # most draft tokens per request for the next step


class StepInputsReceiver:
    """A ``custom_class`` drafter that gets the step's :class:`StepInputs`
    before each ``propose`` call."""

    def set_step(self, step: StepInputs) -> None:
        raise NotImplementedError
