"""The SwiftKV architectures the extras register with vLLM's public
``ModelRegistry`` (lazily: the model module is imported only when a
checkpoint asks for it)."""

from __future__ import annotations

ARCHITECTURE = "LlamaSwiftKVForCausalLM"  # the released checkpoints' architectures entry
MODELS = {
    ARCHITECTURE: "arctic_inference_vllm.swiftkv.llama:LlamaSwiftKVForCausalLM",
}


def register_models() -> None:
    """Register the HF config (``model_type`` "llama_swiftkv") with transformers
    and each architecture with vLLM; idempotent. Raises ImportError where a
    dependency is missing."""
    from vllm import ModelRegistry

    from arctic_inference_core.swiftkv import register_hf_model

    register_hf_model()
    for arch, target in MODELS.items():
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, target)
