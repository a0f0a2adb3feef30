"""The adapter's own settings: ``additional_config={"arctic_inference": {...}}``
(vLLM hashes additional_config into its compile cache key, so these stay
JSON values)."""

from __future__ import annotations

from typing import Any

# suffix_*: suffix_proposer.py; swiftkv_fast_prefill: patches/swiftkv_config.py;
# ulysses_*: ulysses.py (set by --ulysses-sequence-parallel-size)
KNOWN_SETTINGS = (
    "suffix_step_token_budget",
    "suffix_num_threads",
    "swiftkv_fast_prefill",
    "ulysses_sequence_parallel_size",
)
DEFAULT_NUM_THREADS = 1


def adapter_settings(vllm_config: Any) -> dict[str, Any]:
    extra = getattr(vllm_config, "additional_config", None) or {}
    ours = extra.get("arctic_inference", {}) if isinstance(extra, dict) else {}
    if not isinstance(ours, dict):
        raise ValueError('additional_config["arctic_inference"] must be a JSON object')
    unknown = set(ours) - set(KNOWN_SETTINGS)
    if unknown:
        raise ValueError(
            f'additional_config["arctic_inference"] has unknown keys {sorted(unknown)}; '
            f"known: {', '.join(KNOWN_SETTINGS)}"
        )
    budget = ours.get("suffix_step_token_budget")  # None: automatic
    threads = ours.get("suffix_num_threads", DEFAULT_NUM_THREADS)
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 0
    ):
        raise ValueError(f"suffix_step_token_budget must be an integer >= 0, got {budget!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        raise ValueError(f"suffix_num_threads must be an integer in [1, 256], got {threads!r}")
    fast_prefill = ours.get("swiftkv_fast_prefill", True)
    if not isinstance(fast_prefill, bool):
        raise ValueError(f"swiftkv_fast_prefill must be true or false, got {fast_prefill!r}")
    sp = ours.get("ulysses_sequence_parallel_size", 1)
    if isinstance(sp, bool) or not isinstance(sp, int) or sp < 1:
        raise ValueError(f"ulysses_sequence_parallel_size must be an integer >= 1, got {sp!r}")
    return {
        "step_token_budget": budget,
        "num_threads": threads,
        "swiftkv_fast_prefill": fast_prefill,
        "ulysses_sequence_parallel_size": sp,
    }
