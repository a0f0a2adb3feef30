"""Ulysses in vLLM: the front end's rules (what is accepted, what is refused
and with which message), apart from the vLLM mechanics
(patches/ulysses_args.py) and the worker runtime (runtime.py). No vLLM
import at module level."""

from __future__ import annotations

import logging
from typing import Any

from arctic_inference_vllm import envs, settings

SETTING = "ulysses_sequence_parallel_size"  # the AdapterSettings field, and the EngineArgs keyword
FLAG = "--ulysses-sequence-parallel-size"

log = logging.getLogger("vllm.arctic_inference")


def check_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{SETTING} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{SETTING} must be >= 1, got {value}")
    return value


def requested_size(args: Any) -> Any:
    """The SP value as given in ``args.additional_config["arctic_inference"]``
    (unchecked; None when absent). ``args``: EngineArgs in the front end."""
    ours = settings.section(getattr(args, "additional_config", None))
    return None if ours is None else ours.get(SETTING)


def store_size(args: Any, value: Any) -> None:
    """Put SP (the flag's or the keyword's value) into
    ``args.additional_config["arctic_inference"]``, the one source of truth;
    a different value already there is refused."""
    value = check_size(value)
    ours = settings.section(getattr(args, "additional_config", None)) or {}
    if SETTING in ours and ours[SETTING] != value:
        raise ValueError(
            f"{SETTING}={value} conflicts with additional_config"
            f'["{settings.KEY}"]["{SETTING}"]={ours[SETTING]}'
        )
    args.additional_config = settings.with_values(args.additional_config, **{SETTING: value})


def require_switch(args: Any) -> None:
    """Refuse SP > 1 in ``additional_config`` with the extras switch off: vLLM
    would otherwise run on one rank without a word (called from the one
    front-end hook present with the switch off, patches/speculator_config.py)."""
    sp = requested_size(args)
    if sp not in (None, 1) and not envs.extras_enabled():
        raise ValueError(
            f"{SETTING}={sp!r} needs the opt-in switch {envs.EXTRAS_ENV}=1 "
            "(Ulysses sequence parallelism is an extra of arctic_inference_vllm)"
        )
    shift = (settings.section(getattr(args, "additional_config", None)) or {}).get(
        "enable_shift_parallel"
    )
    if shift and not envs.extras_enabled():
        raise ValueError(
            f"enable_shift_parallel={shift!r} needs the opt-in switch {envs.EXTRAS_ENV}=1 "
            "(shift parallelism is an extra of arctic_inference_vllm)"
        )


def configured_size(vllm_config: Any) -> int:
    """SP of a built VllmConfig (1 when not configured)."""
    return settings.adapter_settings(vllm_config).ulysses_sequence_parallel_size


# ------------------------------------------------------------------ heads


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


def model_heads(args: Any) -> tuple[int, int] | None:
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


def check_attention_layer(
    attn_type: Any, prefix: Any, head_size: int, head_size_v: int | None
) -> None:
    """Refuse (in the workers, while the model is built) attention layers the
    head split does not handle: other than decoder self-attention, or with a
    value head size different from the key's."""
    if getattr(attn_type, "value", attn_type) != "decoder":
        raise ValueError(
            f"{SETTING}: attention type {attn_type} ({prefix}) is not supported; only decoder "
            "self-attention"
        )
    if head_size_v is not None and head_size_v != head_size:
        raise ValueError(
            f"{SETTING}: attention with value head size {head_size_v} "
            f"!= key head size {head_size} is not supported"
        )


# ----------------------------------------------------------- support matrix

# Speculative methods whose drafts need no forward pass of a draft model (a
# draft model's attention layers would be split too, but its forward is not).
# "arctic" drafts with heads that read the target's hidden states, which the
# split forward all-gathers on every rank, and has no attention of its own.
DRAFTERS_WITHOUT_A_MODEL = (None, "suffix", "ngram", "arctic")


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


def unsupported_settings(args: Any) -> list[tuple[str, bool]]:
    """The support matrix: each EngineArgs setting Ulysses cannot be combined
    with yet, and whether ``args`` uses it."""
    return [
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


def check_combination(args: Any, sp: int, gpus: int | None) -> None:
    """Refuse at start-up what Ulysses does not support, naming the setting."""
    for name, bad in unsupported_settings(args):
        if bad:
            raise ValueError(
                f"{SETTING}={sp} cannot be combined with {name}="
                f"{getattr(args, name)!r} (not supported yet); drop one of them"
            )
    tp = args.tensor_parallel_size
    if gpus is not None and tp * sp > gpus:
        raise ValueError(
            f"{SETTING}={sp} with tensor_parallel_size={tp} needs {tp * sp} GPUs "
            f"(TP x SP), but {gpus} are visible; lower one of them"
        )
