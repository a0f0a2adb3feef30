"""Patches of vLLM internals, one module each (why, versions, test in its
docstring). Every patch is idempotent and applied by
arctic_inference_vllm.plugin.register, except worker-only ones, which the
component that needs them applies when it is built (arctic_runner: by
ArcticProposer)."""
