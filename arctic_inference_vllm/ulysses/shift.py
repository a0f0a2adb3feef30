"""Shift parallelism in a Ulysses worker (docs/ulysses.md, "Shift
parallelism").

Each worker holds two models over the same ranks and one KV cache:

* the TP model: vLLM's own ``runner.model``, built and run as vLLM builds
  TP = T x S (its groups, custom all-reduce, compilation, CUDA graphs);
* the SP model: built here beside it with the ``T``-sized TP group
  (patches/ulysses_groups.py) and the Ulysses attention layers, eager.

Rank ``r`` attends over head block ``r`` in both, so their attention layers
have the same heads and K/V heads per rank and the same names: vLLM
allocates the cache for the TP model's layers, and the SP model's layers
resolve their names to the same layers at run time (vLLM's attention op
looks the layer up by name in the forward context); :func:`bind_kv_cache`
also points the SP layers' ``kv_cache`` at those tensors.

Per step, :func:`model_for` puts the SP model into ``runner.model`` when
the step schedules more than the threshold's tokens (shift_rules.path_for)
and puts the TP model back after; the SP model's calls run inside
:func:`sp_path`, which swaps vLLM's TP group for the ``T``-sized one.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from arctic_inference_vllm.ulysses import runtime, shift_rules


@dataclass
class _State:
    tp_group: Any = None  # the T-sized GroupCoordinator sharding the SP model's weights
    # per step of this worker while recording: (path, scheduled tokens, requests)
    steps: list[tuple[str, int, int]] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"tp": 0, "sp": 0})
    current: str | None = None  # the path of the step running now


_state = _State()


def set_sp_tp_group(group: Any) -> None:
    _state.tp_group = group


def sp_tp_group() -> Any:
    return _state.tp_group


@contextlib.contextmanager
def sp_path() -> Iterator[None]:
    """The SP model's context: vLLM's TP group is the ``T``-sized one (its
    layers all-reduce and gather there), and attention layers built inside
    split their heads over the sequence-parallel group."""
    from vllm.distributed import parallel_state as ps

    if _state.tp_group is None:
        raise RuntimeError("shift parallelism: the SP model's TP group was never built")
    saved = ps._TP
    was_on = runtime.set_on(True)
    ps._TP = _state.tp_group
    try:
        yield
    finally:
        ps._TP = saved
        runtime.set_on(was_on)


def _in_sp_path(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        with sp_path():
            return fn(*args, **kwargs)

    return call


def sp_config(vllm_config: Any) -> Any:
    """A copy of the worker's config for building the SP model: eager (the
    all-to-alls are not inside vLLM's compiled graphs) and with its own
    registry of attention layers (the TP model's hold the same names). Take
    it before vLLM builds its model, while that registry is empty."""
    from vllm.config import CompilationMode, CUDAGraphMode

    if vllm_config.compilation_config.static_forward_context:
        raise RuntimeError("shift parallelism: copy the config before vLLM builds its model")
    config = copy.deepcopy(vllm_config)
    config.model_config.enforce_eager = True
    config.compilation_config.mode = CompilationMode.NONE
    config.compilation_config.cudagraph_mode = CUDAGraphMode.NONE
    return config


@dataclass
class ShiftModels:
    """A runner's two models and the step rule."""

    tp: Any  # vLLM's model (runner.model outside SP steps)
    sp: Any
    sp_layers: dict[str, Any]  # the SP model's attention layers by name
    threshold: int


def load_sp_model(config: Any, tp_model: Any, threshold: int) -> ShiftModels:
    """Build and load the SP model from ``config`` (:func:`sp_config`) inside
    :func:`sp_path`; its forward and ``compute_logits`` run there too."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader import get_model

    with sp_path(), set_current_vllm_config(config):
        model = get_model(vllm_config=config)
    runtime.wrap_model_forward(model)
    model.forward = _in_sp_path(model.forward)
    model.compute_logits = _in_sp_path(model.compute_logits)
    return ShiftModels(
        tp_model, model, dict(config.compilation_config.static_forward_context), threshold
    )


def bind_kv_cache(models: ShiftModels, tp_layers: dict[str, Any]) -> int:
    """Point the SP model's attention layers at the KV cache tensors vLLM gave
    the TP model's layers of the same names; returns how many were bound.
    Raises if a layer has no counterpart or a cache of another shape."""
    bound = 0
    for name, layer in models.sp_layers.items():
        if not hasattr(layer, "kv_cache"):
            continue
        other = tp_layers.get(name)
        if other is None:
            raise RuntimeError(f"shift parallelism: the TP model has no attention layer {name}")
        if (layer.num_heads, layer.num_kv_heads) != (other.num_heads, other.num_kv_heads):
            raise RuntimeError(
                f"shift parallelism: layer {name} attends over {layer.num_heads}/"
                f"{layer.num_kv_heads} heads in the SP model but {other.num_heads}/"
                f"{other.num_kv_heads} in the TP model; the KV cache cannot be shared"
            )
        layer.kv_cache = other.kv_cache
        bound += 1
    return bound


@contextlib.contextmanager
def model_for(
    runner: Any, models: ShiftModels, num_tokens: int, num_requests: int = 0
) -> Iterator[str]:
    """Run the block (one step's ``execute_model``) with the model of the
    path ``num_tokens`` takes in ``runner.model``; yields the path.
    ``num_requests``: the step's requests, for the record only."""
    path = shift_rules.path_for(num_tokens, models.threshold)
    _state.counts[path] += 1
    if _state.steps is not None:
        _state.steps.append((path, num_tokens, num_requests))
    _state.current = path
    if path == shift_rules.SP_PATH:
        runner.model = models.sp
    try:
        yield path
    finally:
        runner.model = models.tp
        _state.current = None


def current_path() -> str | None:
    """The path of the step running now (None between steps)."""
    return _state.current


def record_steps() -> None:
    """Start recording each step's path (for diagnostics.ShiftInspector)."""
    _state.steps = []


def recorded_steps() -> list[tuple[str, int, int]]:
    return list(_state.steps or [])


def path_counts() -> dict[str, int]:
    """Steps run on each path since the worker started."""
    return dict(_state.counts)
