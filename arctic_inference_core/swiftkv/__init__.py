"""SwiftKV core ops (needs the ``torch`` extra).

After the first ``num_key_value_layers`` decoder layers, one normalized hidden
state feeds a stacked K/V projection that yields the keys and values of every
later layer in one GEMM, so prompt tokens skip the later layers. AcrossKV
shares one K/V slot between ``key_value_group_size`` adjacent later layers.

Layout/bookkeeping (:class:`SwiftKVLayout`, :func:`kv_slot_for_layer`,
:func:`num_kv_slots`) is pure Python; the ops are PyTorch. The Hugging Face
model of the released checkpoint layout (ArcticTraining's ``LlamaSwiftKV``)
lives in :mod:`arctic_inference_core.swiftkv.hf_llama`
(imported on demand; needs ``transformers``); :func:`register_hf_model`
registers it with ``transformers``' Auto classes. See docs/swiftkv.md.

Experimental (docs/compatibility.md); its names and signatures are recorded in
the API snapshot (tests/core/api/public_api.py).
"""

from arctic_inference_core.swiftkv.layout import SwiftKVLayout, kv_slot_for_layer, num_kv_slots
from arctic_inference_core.swiftkv.ops import (
    SwiftKVProjection,
    apply_rope,
    reference_project,
    rope_cos_sin,
    split_kv_weights,
    stack_kv_weights,
    swiftkv_project,
)


def register_hf_model() -> None:
    """Register ``model_type="llama_swiftkv"`` (:class:`LlamaSwiftKVConfig`,
    :class:`LlamaSwiftKVForCausalLM` of :mod:`arctic_inference_core.swiftkv.hf_llama`,
    the released ArcticTraining layout) with ``transformers``' ``AutoConfig`` and
    ``AutoModelForCausalLM``, so that SwiftKV checkpoints load through them.
    Idempotent; needs ``transformers``.
    """
    from arctic_inference_core.swiftkv import hf_llama

    hf_llama._register()


__all__ = [
    "SwiftKVLayout",
    "SwiftKVProjection",
    "apply_rope",
    "kv_slot_for_layer",
    "num_kv_slots",
    "reference_project",
    "register_hf_model",
    "rope_cos_sin",
    "split_kv_weights",
    "stack_kv_weights",
    "swiftkv_project",
]
