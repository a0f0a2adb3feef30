"""Shift parallelism in vLLM: the front end's rules (what is accepted, what
is refused and with which message) and the one per-step rule every rank
applies. No vLLM import at module level (docs/ulysses.md, "Shift
parallelism")."""

from __future__ import annotations

from typing import Any

from arctic_inference_vllm import settings
from arctic_inference_vllm.settings import AdapterSettings

ENABLE = "enable_shift_parallel"  # AdapterSettings fields and EngineArgs keywords
THRESHOLD = "shift_parallel_threshold"
ENABLE_FLAG = "--enable-shift-parallel"
THRESHOLD_FLAG = "--shift-parallel-threshold"
DEFAULT_THRESHOLD: int = AdapterSettings.shift_parallel_threshold

TP_PATH, SP_PATH = "tp", "sp"


def path_for(num_tokens: int, threshold: int) -> str:
    """The path of a step that schedules ``num_tokens`` tokens: TP for at most
    ``threshold`` (Arctic Inference's rule), else SP. Every rank sees the same
    scheduler output, so every rank chooses alike without communicating."""
    return TP_PATH if num_tokens <= threshold else SP_PATH


def check_enable(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{ENABLE} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_threshold(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{THRESHOLD} must be an int >= 1 (scheduled tokens per step), got "
            f"{type(value).__name__} {value!r}"
        )
    if value < 1:
        raise ValueError(f"{THRESHOLD} must be >= 1 (scheduled tokens per step), got {value}")
    return value


_CHECKS = {ENABLE: check_enable, THRESHOLD: check_threshold}


def store(args: Any, name: str, value: Any) -> None:
    """Put a flag's or keyword's value into
    ``args.additional_config["arctic_inference"]``; a different value already
    there is refused."""
    value = _CHECKS[name](value)
    ours = settings.section(getattr(args, "additional_config", None)) or {}
    if name in ours and ours[name] != value:
        raise ValueError(
            f"{name}={value!r} conflicts with additional_config"
            f'["{settings.KEY}"]["{name}"]={ours[name]!r}'
        )
    args.additional_config = settings.with_values(args.additional_config, **{name: value})


def requested(args: Any, sp: int) -> int | None:
    """The threshold when shift parallelism is asked for in
    ``args.additional_config``, else None. Refuses a threshold without shift,
    and shift without Ulysses SP > 1. ``sp``: the checked SP size."""
    ours = settings.section(getattr(args, "additional_config", None)) or {}
    enabled = check_enable(ours.get(ENABLE, False))
    threshold = ours.get(THRESHOLD)
    if threshold is not None:
        check_threshold(threshold)
    if not enabled:
        if threshold is not None:
            raise ValueError(
                f"{THRESHOLD}={threshold} has no effect without {ENABLE} ({ENABLE_FLAG}); "
                "add it or drop the threshold"
            )
        return None
    if sp < 2:
        raise ValueError(
            f"{ENABLE} needs ulysses_sequence_parallel_size > 1 "
            "(--ulysses-sequence-parallel-size): shift parallelism switches the same ranks "
            f"between Ulysses SP and TP; got ulysses_sequence_parallel_size={sp}"
        )
    return DEFAULT_THRESHOLD if threshold is None else threshold


def check_steps(threshold: int, max_num_batched_tokens: int) -> None:
    """Refuse a threshold that no step exceeds (the SP path would never run)."""
    if threshold >= max_num_batched_tokens:
        raise ValueError(
            f"{THRESHOLD}={threshold} is not below max_num_batched_tokens="
            f"{max_num_batched_tokens}: every step would take the TP path; lower the threshold "
            "or raise --max-num-batched-tokens (or drop shift parallelism and serve with TP)"
        )


def explicit_graph_sizes(args: Any) -> tuple[int | None, list[int] | None]:
    """The CUDA graph capture sizes the user asked for (max, list), from the
    engine arguments or their compilation config; None where not given."""
    cc = getattr(args, "compilation_config", None)

    def field(name: str) -> Any:
        given = getattr(args, name, None)
        if given is None and cc is not None:
            given = cc.get(name) if isinstance(cc, dict) else getattr(cc, name, None)
        return given

    sizes = field("cudagraph_capture_sizes")
    return field("max_cudagraph_capture_size"), None if sizes is None else list(sizes)


def check_graph_sizes(threshold: int, max_size: int | None, sizes: list[int] | None) -> None:
    """Refuse CUDA graphs asked for above the threshold: only the TP path runs
    graphs, and it only serves steps of at most ``threshold`` tokens."""
    too_big = [s for s in (sizes or []) if s > threshold]
    if max_size is not None and max_size > threshold:
        too_big.append(max_size)
    if too_big:
        raise ValueError(
            f"CUDA graph capture size {max(too_big)} is above {THRESHOLD}={threshold}: with "
            "shift parallelism graphs serve the TP path only, which runs steps of at most "
            "the threshold's tokens; capture at most the threshold or raise it"
        )
