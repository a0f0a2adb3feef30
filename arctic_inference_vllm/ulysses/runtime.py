"""Ulysses in vLLM: one worker's runtime (docs/ulysses.md).

This rank's sequence-parallel group (set by patches/ulysses_groups.py when
vLLM builds its groups), the split of the current forward pass's tokens, the
model forward that runs this rank's slice (:func:`wrap_model_forward`) and
the attention forward that exchanges heads around vLLM's attention
(:func:`attention_forward`). The state is this module's own: other modules
read it through :func:`active`, :func:`size` and :func:`rank`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch


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
    # whether the layers built now are the SP model's: always with Ulysses
    # alone; with shift parallelism only inside shift.sp_path()
    on: bool = True


_state = _State()


def set_group(group: Any, *, on: bool = True) -> None:
    _state.group, _state.size, _state.rank = group, group.world_size, group.rank_in_group
    _state.on = on


def set_on(on: bool) -> bool:
    """Turn the split of attention layers built from now on on or off (shift
    parallelism builds a plain TP model beside the SP one); returns the
    previous value."""
    previous, _state.on = _state.on, on
    return previous


def active() -> bool:
    """Whether attention layers built now split their heads over the
    sequence-parallel group."""
    return _state.group is not None and _state.size > 1 and _state.on


def size() -> int:
    """This rank's sequence-parallel size (1 outside a Ulysses worker)."""
    return _state.size


def rank() -> int:
    """This rank's index in its sequence-parallel group."""
    return _state.rank


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


def in_split_forward() -> bool:
    """Whether a sequence-parallel model forward is running (its layers see
    this rank's token slice, not the step's tokens)."""
    return _state.split is not None


def kv_for_cache(key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V ``[tokens, kv_heads, head_dim]`` as a layer that writes the KV
    cache without attending (SwiftKV's cache writers) must write them: inside
    a sequence-parallel forward, every token of the step for this rank's
    share of the K/V heads (the GQA rule, as the Ulysses attention layers
    receive them), since the cache holds that share and the step's slot
    mapping covers every token; outside one, unchanged."""
    from arctic_inference_core.ulysses import expand_kv_heads_for, seq_to_head

    split = _state.split
    if split is None:
        return key, value
    group = _state.group.device_group
    replicas = expand_kv_heads_for(_state.size, key.shape[1])
    k, v = (
        cast("torch.Tensor", seq_to_head(x.contiguous(), group, num_kv_replicas=replicas))
        for x in (key, value)
    )
    return k[: split.total], v[: split.total]


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
        # async_op=False (the default): tensors, not UlyssesWork handles
        if key is None:
            q = cast("torch.Tensor", seq_to_head(q, group))
        else:
            q, key, value = cast(
                "tuple[torch.Tensor, torch.Tensor, torch.Tensor]",
                seq_to_head_qkv(
                    q,
                    key.reshape(local, tp_kv_heads, dim),
                    value.reshape(local, tp_kv_heads, dim),
                    group,
                ),
            )
            key = key[: split.total].reshape(split.total, -1)
            value = value[: split.total].reshape(split.total, -1)
        q = q[: split.total].reshape(split.total, -1)
        out = original(q, key, value, None, output_dtype)
        out = out.view(split.total, layer.num_heads, -1)
        if split.padded > split.total:
            out = _slice_tokens(out, 0, split.padded, split.total, 0)
        out = cast("torch.Tensor", head_to_seq(out, group))
        return out.reshape(output_shape if output_shape is not None else (local, -1))

    return forward
