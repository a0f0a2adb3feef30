"""Patches of vLLM internals, one module each (why, versions, test in its
docstring). Every patch is applied by arctic_inference_vllm.plugin.register
and is idempotent."""
