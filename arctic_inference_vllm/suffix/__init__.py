"""vLLM's native ``method: "suffix"`` on arctic_inference_core: the proposer
vLLM builds (``proposer``, installed by patches/suffix_backend.py), the
cost-aware choice of drafts per step (``draft_policy``, over the learned step
costs of ``step_cost`` and the calibrated acceptance of ``acceptance``) and
the padding of drafts to full CUDA graphs (``graph_padding``)."""
