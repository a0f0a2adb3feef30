"""Arctic speculator: lightweight draft heads (MLP and sum-LSTM) that read the
base model's last hidden state and last token and propose ``n_predict`` tokens
greedily, one head per position.

Requires PyTorch (the ``torch`` extra) and ``safetensors``; importing
:mod:`arctic_inference_core` itself never imports torch.

Public API: :class:`SpeculatorConfig`, :class:`MLPSpeculator`,
:class:`LSTMSpeculator`, :func:`load_speculator`, :func:`save_speculator`,
:func:`build_speculator`, :func:`draft` (with :class:`DraftHeads`, the
shape of a model it drives), :class:`GraphDrafter` (``draft`` replayed from
CUDA graphs). See docs/speculator.md.
"""

from __future__ import annotations

from arctic_inference_core._optional import require_torch

require_torch("speculator")

from arctic_inference_core.speculator.checkpoint import (  # noqa: E402  (after the torch check)
    build_speculator,
    load_speculator,
    save_speculator,
)
from arctic_inference_core.speculator.config import SpeculatorConfig  # noqa: E402  (after the torch check)
from arctic_inference_core.speculator.draft import DraftHeads, draft  # noqa: E402  (after the torch check)
from arctic_inference_core.speculator.graphs import GraphDrafter  # noqa: E402  (after the torch check)
from arctic_inference_core.speculator.modules import LSTMSpeculator, MLPSpeculator, SpeculatorBase  # noqa: E402  (after the torch check)

__all__ = [
    "SpeculatorConfig",
    "SpeculatorBase",
    "MLPSpeculator",
    "LSTMSpeculator",
    "build_speculator",
    "load_speculator",
    "save_speculator",
    "draft",
    "DraftHeads",
    "GraphDrafter",
]
