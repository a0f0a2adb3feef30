"""The adapter's own settings: ``additional_config={"arctic_inference": {...}}``
(vLLM hashes additional_config into its compile cache key, so these stay
JSON values).

:class:`AdapterSettings` has one field per key, with the key's name; it is
the only reader of that section and :data:`KEY` the only spelling of its
name. Front-end code that must put a value there (the Ulysses flag) goes
through :func:`with_values`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY = "arctic_inference"  # additional_config[KEY]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class AdapterSettings:
    """Checked settings (ValueError naming the key on a bad value)."""

    # suffix/draft_policy.py: a fixed cap on the tokens one step verifies
    # (None: the cost-aware policy chooses every step)
    suffix_step_token_budget: int | None = None
    # suffix/step_cost.py: a measured step cost curve (JSON file) the
    # policy starts from (None: learned from scratch)
    suffix_step_cost_curve: str | None = None
    # suffix/proposer.py: threads of the per-step drafting call
    suffix_num_threads: int = 1
    # suffix/proposer.py: running requests draft from each other's outputs
    # as they are produced (the core's live sharing, as arctic-inference)
    suffix_share_active_responses: bool = True
    # swiftkv/config.py: prompt tokens skip the later layers
    swiftkv_fast_prefill: bool = True
    # ulysses/ (set by --ulysses-sequence-parallel-size)
    ulysses_sequence_parallel_size: int = 1
    # ulysses/shift.py (set by --enable-shift-parallel, --shift-parallel-threshold):
    # steps of at most the threshold's scheduled tokens take the TP path
    enable_shift_parallel: bool = False
    shift_parallel_threshold: int = 512

    def __post_init__(self) -> None:
        budget = self.suffix_step_token_budget
        if budget is not None and (not _is_int(budget) or budget < 0):
            raise ValueError(f"suffix_step_token_budget must be an integer >= 0, got {budget!r}")
        curve = self.suffix_step_cost_curve
        if curve is not None and (not isinstance(curve, str) or not curve):
            raise ValueError(
                f"suffix_step_cost_curve must be the path of a JSON cost curve, got {curve!r}"
            )
        threads = self.suffix_num_threads
        if not _is_int(threads) or not 1 <= threads <= 256:
            raise ValueError(f"suffix_num_threads must be an integer in [1, 256], got {threads!r}")
        if not isinstance(self.suffix_share_active_responses, bool):
            raise ValueError(
                "suffix_share_active_responses must be true or false, "
                f"got {self.suffix_share_active_responses!r}"
            )
        fast_prefill = self.swiftkv_fast_prefill
        if not isinstance(fast_prefill, bool):
            raise ValueError(f"swiftkv_fast_prefill must be true or false, got {fast_prefill!r}")
        sp = self.ulysses_sequence_parallel_size
        if not _is_int(sp) or sp < 1:
            raise ValueError(f"ulysses_sequence_parallel_size must be an integer >= 1, got {sp!r}")
        if not isinstance(self.enable_shift_parallel, bool):
            raise ValueError(
                f"enable_shift_parallel must be true or false, got {self.enable_shift_parallel!r}"
            )
        threshold = self.shift_parallel_threshold
        if not _is_int(threshold) or threshold < 1:
            raise ValueError(f"shift_parallel_threshold must be an integer >= 1, got {threshold!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The known keys, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_additional_config(cls, additional_config: Any) -> AdapterSettings:
        ours = section(additional_config)
        if ours is None:
            if isinstance(additional_config, Mapping) and KEY in additional_config:
                raise ValueError(f'additional_config["{KEY}"] must be a JSON object')
            return cls()
        unknown = set(ours) - set(cls.names())
        if unknown:
            raise ValueError(
                f'additional_config["{KEY}"] has unknown keys {sorted(unknown)}; '
                f"known: {', '.join(cls.names())}"
            )
        return cls(**ours)


def adapter_settings(vllm_config: Any) -> AdapterSettings:
    """The settings of a built VllmConfig (or anything with ``additional_config``)."""
    return AdapterSettings.from_additional_config(getattr(vllm_config, "additional_config", None))


def section(additional_config: Any) -> Mapping[str, Any] | None:
    """``additional_config["arctic_inference"]`` as given, unchecked; None when
    absent or not a JSON object."""
    if not isinstance(additional_config, Mapping):
        return None
    ours = additional_config.get(KEY)
    return ours if isinstance(ours, Mapping) else None


def with_values(additional_config: Any, **values: Any) -> dict[str, Any]:
    """A copy of ``additional_config`` with ``values`` set in its
    ``"arctic_inference"`` section (the other keys kept)."""
    unknown = set(values) - set(AdapterSettings.names())
    if unknown:
        raise ValueError(f"not adapter settings: {sorted(unknown)}")
    extra = dict(additional_config or {})
    if extra.get(KEY) is not None and section(extra) is None:
        raise ValueError(f'additional_config["{KEY}"] must be a JSON object')
    extra[KEY] = {**(section(extra) or {}), **values}
    return extra
