"""The CUDA graph mode suffix decoding (and the ``arctic`` method) runs in
where the user left it unset: ``FULL``.

With speculation on, vLLM's default ``FULL_AND_PIECEWISE`` gives a full CUDA
graph only to uniform decode steps, where every request verifies exactly
``num_speculative_tokens`` drafts. A step without drafts (one token per
request) is not uniform, so it runs piecewise graphs with eager attention in
between: whatever the draft policy chooses, a busy batch cannot cost what it
costs without speculation (bench-lm at concurrency 64 on an H200: 0.67x of
no speculation with default graphs, 0.95x with ``FULL``). ``FULL`` runs
every step up to the largest graph as one graph where the attention backend
supports mixed batches (FlashAttention 3 on Hopper); elsewhere vLLM itself
falls back to ``FULL_AND_PIECEWISE`` with a warning. CPU and
``enforce_eager`` have no graphs and are left alone; an explicit
``cudagraph_mode`` always wins. Installed by patches/suffix_graph_mode.py.
"""

from __future__ import annotations

PREFERRED_MODE = "FULL"
ARCTIC_PROPOSER = "arctic_inference_vllm.speculator.proposer.ArcticProposer"


def preferred_graph_mode(method: str | None, model: str | None, on_cuda: bool) -> str | None:
    """The graph mode to set for a speculative ``method`` (and ``model``,
    the class of a ``custom_class`` method) whose user left it unset; None:
    vLLM's default."""
    if not on_cuda:
        return None
    if method == "suffix" or (method == "custom_class" and model == ARCTIC_PROPOSER):
        return PREFERRED_MODE
    return None
