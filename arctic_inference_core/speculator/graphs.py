"""Replay :func:`draft` from CUDA graphs.

A speculator step is a few small kernels per head; run eagerly, launching
them costs more than computing them (on an H100 with bench-lm, the eager
LSTM drafter ate the whole speed-up at concurrency 1). :class:`GraphDrafter`
captures :func:`draft` once per (padded batch size, draft length) on first
use and replays it after copying the inputs into static buffers. Batches are
padded up to the next captured size (powers of two up to ``max_batch_size``);
padding rows compute garbage that is sliced off. Off CUDA, or above
``max_batch_size``, it runs :func:`draft` eagerly.
"""

from __future__ import annotations

import torch

from arctic_inference_core._validate import is_int
from arctic_inference_core.speculator.draft import draft
from arctic_inference_core.speculator.modules import SpeculatorBase

__all__ = ["GraphDrafter"]


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class GraphDrafter:
    """``GraphDrafter(model, max_batch_size)(hidden, last_tokens, num_tokens)``
    returns what ``draft(model, hidden, last_tokens, num_tokens)`` returns."""

    def __init__(self, model: SpeculatorBase, max_batch_size: int = 256) -> None:
        if not is_int(max_batch_size) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
        self.model = model
        self.max_batch_size = _bucket(max_batch_size)
        weight = next(model.parameters())
        self.device = weight.device
        self.enabled = self.device.type == "cuda"
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if self.enabled:
            self._hidden = torch.zeros(
                self.max_batch_size, model.input_hidden_dim, dtype=weight.dtype, device=self.device
            )
            self._tokens = torch.zeros(self.max_batch_size, dtype=torch.int64, device=self.device)
            self._pool = torch.cuda.graph_pool_handle()

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def __call__(
        self, hidden_states: torch.Tensor, last_tokens: torch.Tensor, num_tokens: int | None = None
    ) -> torch.Tensor:
        n = self.model.n_predict if num_tokens is None else num_tokens
        b = hidden_states.shape[0]
        if not self.enabled or b > self.max_batch_size or hidden_states.device != self.device:
            return draft(self.model, hidden_states, last_tokens, num_tokens)
        if last_tokens.dim() != 1 or last_tokens.shape[0] != b or hidden_states.dim() != 2:
            return draft(
                self.model, hidden_states, last_tokens, num_tokens
            )  # raises its ValueError
        size = _bucket(b)
        graph = self._graphs.get((size, n))
        if graph is None:
            graph = self._capture(size, n)
        self._hidden[:b].copy_(hidden_states)
        self._tokens[:b].copy_(last_tokens)
        graph[0].replay()
        return graph[1][:b]

    def _capture(self, size: int, n: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        hidden, tokens = self._hidden[:size], self._tokens[:size]
        # Warm up on a side stream (lazy cuBLAS/allocator setup must not be captured).
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            draft(self.model, hidden, tokens, n)
        torch.cuda.current_stream(self.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool):
            out = draft(self.model, hidden, tokens, n)
        self._graphs[(size, n)] = (g, out)
        return g, out
