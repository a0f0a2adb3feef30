"""Ulysses sequence parallelism in vLLM (extras switch on; docs/ulysses.md).

``SP`` ranks share one step. Each rank embeds and runs the projections and
MLPs of a contiguous slice of the step's tokens; around attention,
``arctic_inference_core.ulysses`` exchanges q/k/v so that each rank attends
over *all* the step's tokens for ``1/SP`` of the heads, writing its heads'
K/V into its own KV cache (the cache is sharded by heads, as under tensor
parallelism of the same size). The final hidden states are all-gathered, so
every rank computes the same logits, as TP ranks do.

Layout: vLLM is told ``tensor_parallel_size = TP * SP`` so it starts that
many workers and sizes the attention side (heads and KV cache per rank) for
``TP * SP``; inside the workers the weight-sharding TP group has ``TP``
ranks (patches/ulysses_groups.py) and the layers' weights are replicated
over the ``SP`` ranks of a sequence-parallel group.

Modules:

* ``rules``: the front end's rules: the setting, its checks, the support
  matrix, the head-split rule (no vLLM import).
* ``runtime``: one worker's sequence-parallel group, the token split and the
  forward wrappers.
* ``workers``: the worker classes vLLM runs for a Ulysses deployment.

The vLLM hooks are patches/ulysses_args.py (front end), ulysses_groups.py
and ulysses_attention.py (workers).
"""
