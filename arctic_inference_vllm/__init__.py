"""arctic_inference_vllm: the thin vLLM integration of arctic_inference_core.

vLLM loads :func:`register` in every process through the
``vllm.general_plugins`` entry point. It makes vLLM's native
``speculative_config={"method": "suffix"}`` run on arctic_inference_core
(no other package needed) and leaves the rest of vLLM alone unless the
opt-in switch ``ARCTIC_INFERENCE_VLLM_EXTRAS=1`` is set (see docs/vllm.md).
"""

from arctic_inference_vllm.plugin import register

__all__ = ["register"]
