"""Batched greedy drafting, usable by any engine and CUDA-graph friendly.

:func:`draft` uses only shape checks (static under capture) and tensor ops: no
``.item()``, ``.tolist()``, ``.cpu()``, no host syncs and no Python control
flow that depends on tensor values. The loop over heads is over the static
``num_tokens``, so one capture per (batch size, num_tokens) replays exactly.

This module depends on no other speculator module: :func:`draft` drives any
model with the :class:`DraftHeads` shape (the heads in
:mod:`~arctic_inference_core.speculator.modules` have it, and their
``forward`` calls :func:`draft`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from arctic_inference_core._validate import is_int

__all__ = ["DraftHeads", "draft"]


class DraftHeads(Protocol):
    """What :func:`draft` needs from a speculator (:class:`MLPSpeculator` and
    :class:`LSTMSpeculator` have it): ``n_predict`` heads run in sequence, each
    reading the previous head's state and token."""

    n_predict: int
    input_hidden_dim: int

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def initial_cell(self, hidden_states: torch.Tensor) -> torch.Tensor | None: ...

    def step(
        self, head_index: int, state: torch.Tensor, cell: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]: ...


def draft(
    model: DraftHeads,
    hidden_states: torch.Tensor,
    last_tokens: torch.Tensor,
    num_tokens: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Propose draft tokens greedily (argmax per head).

    Args:
        model: an :class:`MLPSpeculator` or :class:`LSTMSpeculator` (any
            :class:`DraftHeads`).
        hidden_states: [batch, input_hidden_dim] last hidden state of the base
            model at the position of ``last_tokens`` (cast to the model dtype).
        last_tokens: [batch] integer tokens (the last token of each sequence).
        num_tokens: tokens to propose, ``1 <= num_tokens <= n_predict``
            (default ``n_predict``); a static Python int.
        out: optional preallocated [batch, num_tokens] int64 tensor written in
            place (handy for CUDA-graph static outputs); returned.

    Returns:
        [batch, num_tokens] int64 draft tokens; column ``i`` is head ``i``'s
        argmax (ties resolve like ``torch.argmax``).

    Raises:
        ValueError: wrong ranks/sizes or ``num_tokens`` out of range (checked
            on shapes only, so no device sync).
    """
    n = model.n_predict if num_tokens is None else num_tokens
    if not is_int(n) or not 1 <= n <= model.n_predict:
        raise ValueError(
            f"draft: num_tokens must be an int in [1, {model.n_predict}], got {num_tokens!r}"
        )
    if hidden_states.dim() != 2 or hidden_states.shape[1] != model.input_hidden_dim:
        raise ValueError(
            f"draft: hidden_states must be [batch, {model.input_hidden_dim}], got {tuple(hidden_states.shape)}"
        )
    if last_tokens.dim() != 1 or last_tokens.shape[0] != hidden_states.shape[0]:
        raise ValueError(
            f"draft: last_tokens must be [batch={hidden_states.shape[0]}], got {tuple(last_tokens.shape)}"
        )
    if last_tokens.is_floating_point() or last_tokens.is_complex():
        raise ValueError(f"draft: last_tokens must be an integer tensor, got {last_tokens.dtype}")
    if out is not None and (
        tuple(out.shape) != (hidden_states.shape[0], n) or out.dtype != torch.int64
    ):
        raise ValueError(
            f"draft: out must be int64 [{hidden_states.shape[0]}, {n}], got {out.dtype} {tuple(out.shape)}"
        )

    weight = next(model.parameters())
    with torch.no_grad():
        state = hidden_states.to(dtype=weight.dtype)
        tokens = last_tokens.to(dtype=torch.int64)
        cell = model.initial_cell(state)
        proposed = []
        for i in range(n):
            state, cell, logits = model.step(i, state, cell, tokens)
            tokens = torch.argmax(logits, dim=-1)
            proposed.append(tokens)
        result = torch.stack(proposed, dim=1)
        if out is not None:
            out.copy_(result)
            return out
    return result
