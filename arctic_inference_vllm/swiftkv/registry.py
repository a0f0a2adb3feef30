"""Model architectures the extras register with vLLM's ModelRegistry."""

MODELS = {
    "SwiftKVLlamaForCausalLM": "arctic_inference_vllm.models.swiftkv_llama:SwiftKVLlamaForCausalLM",
}
