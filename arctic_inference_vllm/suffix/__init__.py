"""vLLM's native ``method: "suffix"`` on arctic_inference_core: the proposer
vLLM builds (``proposer``, installed by patches/suffix_backend.py), the
per-step draft budget (``draft_budget``) and the padding of small decode
steps to full CUDA graphs (``graph_padding``)."""
