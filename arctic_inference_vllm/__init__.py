"""arctic_inference_vllm: the thin vLLM integration of arctic_inference_core.

It registers the core's components into vLLM through the
``vllm.general_plugins`` entry point. The adapter is under construction (see
the vLLM adapter issue); until it lands this package registers nothing and
vLLM is unaffected by its presence.
"""

__all__: list[str] = []
