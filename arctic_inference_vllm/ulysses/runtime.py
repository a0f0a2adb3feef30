"""Ulysses sequence parallelism in vLLM: the configuration rules and the
per-worker runtime (docs/ulysses.md).

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
ranks (``patches/ulysses_groups.py``) and the layers' weights are
replicated over the ``SP`` ranks of a sequence-parallel group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SETTING = "ulysses_sequence_parallel_size"
FLAG = "--ulysses-sequence-parallel-size"


def check_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{SETTING} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{SETTING} must be >= 1, got {value}")
    return value


def requested_size(args: Any) -> Any:
    """The SP value as given in ``args.additional_config["arctic_inference"]``
    (unchecked; None when absent). ``args``: EngineArgs in the front end."""
    extra = getattr(args, "additional_config", None)
    ours = extra.get("arctic_inference") if isinstance(extra, dict) else None
    return ours.get(SETTING) if isinstance(ours, dict) else None


def require_switch(args: Any) -> None:
    """Refuse SP > 1 in ``additional_config`` with the extras switch off: vLLM
    would otherwise run on one rank without a word (called from the one
    front-end hook present with the switch off, patches/arctic_config.py)."""
    from arctic_inference_vllm import envs

    sp = requested_size(args)
    if sp not in (None, 1) and not envs.extras_enabled():
        raise ValueError(
            f"{SETTING}={sp!r} needs the opt-in switch {envs.EXTRAS_ENV}=1 "
            "(Ulysses sequence parallelism is an extra of arctic_inference_vllm)"
        )


def configured_size(vllm_config: Any) -> int:
    """SP of a built VllmConfig (1 when not configured)."""
    from arctic_inference_vllm.settings import adapter_settings

    return adapter_settings(vllm_config)["ulysses_sequence_parallel_size"]


def attention_heads(num_heads: int, num_kv_heads: int, sp: int) -> tuple[int, int]:
    """Heads one rank attends over, given a TP rank's query and K/V heads:
    ``(num_heads // sp, num_kv_heads * replicas // sp)`` with the K/V
    replication rule of ``expand_kv_heads_for``. Raises ValueError naming
    the numbers when no split exists."""
    from arctic_inference_core.ulysses import expand_kv_heads_for

    try:
        replicas = expand_kv_heads_for(sp, num_kv_heads, num_heads)
    except ValueError as e:
        raise ValueError(f"{SETTING}={sp}: {e}") from None
    return num_heads // sp, num_kv_heads * replicas // sp


def check_model_heads(num_heads: int, num_kv_heads: int, tp: int, sp: int) -> tuple[int, int]:
    """The start-up check of a model's head counts against TP x SP; returns the
    heads per rank. vLLM's TP gives each TP rank ``num_heads / tp`` query heads
    and ``max(1, num_kv_heads / tp)`` K/V heads; SP splits those further."""
    if num_heads % (tp * sp) != 0:
        raise ValueError(
            f"{SETTING}={sp} with tensor_parallel_size={tp}: the model's {num_heads} attention "
            f"heads cannot be split over {tp * sp} ranks ({num_heads} is not divisible by "
            f"{tp} x {sp}); choose sizes whose product divides {num_heads}"
        )
    return attention_heads(num_heads // tp, max(1, num_kv_heads // tp), sp)


# ------------------------------------------------------------ worker runtime


@dataclass(frozen=True)
class StepSplit:
    """How the current forward pass's tokens are split: ``total`` real tokens,
    ``local`` per rank (the last ranks' slices are padded to ``local``)."""

    total: int
    local: int

    @property
    def padded(self) -> int:
        return self.local * _state.size


@dataclass
class _State:
    group: Any = None  # vLLM GroupCoordinator of this rank's sequence-parallel group
    size: int = 1
    rank: int = 0
    split: StepSplit | None = None


_state = _State()


def set_group(group: Any) -> None:
    _state.group, _state.size, _state.rank = group, group.world_size, group.rank_in_group


def active() -> bool:
    return _state.group is not None and _state.size > 1


def size() -> int:
    return _state.size


def _slice_tokens(x: Any, lo: int, hi: int, total: int, dim: int) -> Any:
    """Tokens ``[lo, hi)`` of ``x`` along ``dim``, zero-padded past ``total``."""
    import torch

    if x is None:
        return None
    real = x.narrow(dim, min(lo, total), max(0, min(hi, total) - lo))
    missing = (hi - lo) - real.shape[dim]
    if missing == 0:
        return real
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([real, x.new_zeros(shape)], dim=dim)


def wrap_model_forward(model: Any) -> None:
    """Make ``model(...)`` (vLLM's call: input_ids, positions,
    intermediate_tensors, inputs_embeds) run this rank's token slice and
    return the all-gathered hidden states of every token. Idempotent."""
    import torch
    import torch.distributed as dist

    if getattr(model, "_arctic_ulysses_wrapped", False):
        return
    original = model.forward

    def forward(
        input_ids: Any = None,
        positions: Any = None,
        intermediate_tensors: Any = None,
        inputs_embeds: Any = None,
        **kwargs: Any,
    ) -> Any:
        if intermediate_tensors is not None:
            raise RuntimeError("Ulysses sequence parallelism does not support pipeline parallelism")
        total = positions.shape[-1]
        local = -(-total // _state.size)
        lo, hi = _state.rank * local, (_state.rank + 1) * local
        _state.split = StepSplit(total, local)
        try:
            hidden = original(
                input_ids=_slice_tokens(input_ids, lo, hi, total, 0),
                positions=_slice_tokens(positions, lo, hi, total, positions.dim() - 1),
                intermediate_tensors=None,
                inputs_embeds=_slice_tokens(inputs_embeds, lo, hi, total, 0),
                **kwargs,
            )
        finally:
            _state.split = None
        if not isinstance(hidden, torch.Tensor):
            raise TypeError(
                f"Ulysses sequence parallelism supports models whose forward returns the hidden "
                f"states as one tensor; {type(model).__name__} returned {type(hidden).__name__}"
            )
        gathered = hidden.new_empty((local * _state.size, *hidden.shape[1:]))
        dist.all_gather_into_tensor(gathered, hidden.contiguous(), group=_state.group.device_group)
        return gathered[:total]

    model.forward = forward
    model._arctic_ulysses_wrapped = True


def attention_forward(layer: Any, original: Any, tp_heads: int, tp_kv_heads: int) -> Any:
    """The forward of a vLLM ``Attention`` layer built for ``tp_heads`` query
    and ``tp_kv_heads`` K/V heads of this rank's token slice, attending over
    the whole step for its own ``1/SP`` of the heads."""
    from arctic_inference_core.ulysses import head_to_seq, seq_to_head, seq_to_head_qkv

    def forward(
        query: Any, key: Any, value: Any, output_shape: Any = None, output_dtype: Any = None
    ) -> Any:
        split = _state.split
        if split is None:
            raise RuntimeError(
                f"Ulysses attention layer {getattr(layer, 'layer_name', '?')} ran outside the "
                "sequence-parallel model forward (a model runner path that bypasses it)"
            )
        group = _state.group.device_group
        local, dim = query.shape[0], layer.head_size
        if local != split.local:
            raise RuntimeError(f"Ulysses: attention got {local} tokens, expected {split.local}")
        q = query.reshape(local, tp_heads, dim)
        if key is None:
            q = seq_to_head(q, group)
        else:
            q, key, value = seq_to_head_qkv(
                q,
                key.reshape(local, tp_kv_heads, dim),
                value.reshape(local, tp_kv_heads, dim),
                group,
            )
            key = key[: split.total].reshape(split.total, -1)
            value = value[: split.total].reshape(split.total, -1)
        q = q[: split.total].reshape(split.total, -1)
        out = original(q, key, value, None, output_dtype)
        out = out.view(split.total, layer.num_heads, -1)
        if split.padded > split.total:
            out = _slice_tokens(out, 0, split.padded, split.total, 0)
        out = head_to_seq(out, group)
        return out.reshape(output_shape if output_shape is not None else (local, -1))

    return forward
