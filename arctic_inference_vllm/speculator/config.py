"""The ``arctic`` speculative method: its settings and their start-up checks.

Users write ``speculative_config={"method": "arctic", "model": DIR,
"num_speculative_tokens": N, "enable_suffix_decoding": true,
"disable_by_batch_size": B}``. vLLM has no such method, so the front end
(patches/speculator_config.py) rewrites it with :func:`translate` into vLLM's
own ``method: "custom_class"`` with
:class:`~arctic_inference_vllm.speculator.proposer.ArcticProposer` as the
class, and passes the arctic settings to every process in
``additional_config[SETTINGS_KEY]``.

The speculator must fit the served model: hidden and vocab sizes always;
its ``base_model_archs`` (config.json) must name the served model's
architecture unless the user sets ``"skip_base_model_archs_check": true``,
an arctic-only speculative_config key like the two above (docs/speculator.md).

No vLLM import here, so the checks are unit-testable without vLLM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from arctic_inference_vllm.envs import EXTRAS_ENV, extras_enabled

METHOD = "arctic"
PROPOSER_CLASS = "arctic_inference_vllm.speculator.proposer.ArcticProposer"
SETTINGS_KEY = "arctic_speculator"  # in additional_config; set by the adapter only
# The override of the base_model_archs check (a speculative_config key).
SKIP_ARCHS_KEY = "skip_base_model_archs_check"
# Keys of an arctic speculative_config that vLLM's SpeculativeConfig lacks.
ARCTIC_ONLY_KEYS = (
    "enable_suffix_decoding",
    "disable_by_batch_size",
    "hard_disable_by_batch_size",
    SKIP_ARCHS_KEY,
)
# Arctic Inference's default for disable_by_batch_size when unset.
DEFAULT_DISABLE_BY_BATCH_SIZE = 64
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

log = logging.getLogger("vllm.arctic_inference")


class ArcticConfigError(ValueError):
    """A bad ``method: "arctic"`` configuration (raised at engine start-up)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"speculative_config method 'arctic': {message}")


@dataclass(frozen=True)
class ArcticSettings:
    """What the worker-side proposer needs (JSON-able: it travels in
    ``additional_config``, which vLLM hashes with json.dumps)."""

    model: str  # absolute path of the speculator directory
    n_predict: int  # the speculator's heads
    num_speculative_tokens: int  # most draft tokens per request per step
    enable_suffix_decoding: bool
    disable_by_batch_size: int | None  # above this many running: only the first this many draft
    hard_disable_by_batch_size: int | None = None  # at least this many running: no drafts

    def draft_limit(self, batch_size: int) -> int:
        """How many requests of a step of ``batch_size`` may draft (the first
        ones, in the batch's order), as Arctic Inference decides it."""
        hard = self.hard_disable_by_batch_size
        if hard is not None and batch_size >= hard:
            return 0
        soft = self.disable_by_batch_size
        if soft is not None and batch_size > soft:
            return soft
        return batch_size

    @property
    def speculator_tokens(self) -> int:
        """Tokens the speculator drafts (suffix drafts may be longer)."""
        return min(self.num_speculative_tokens, self.n_predict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_additional_config(cls, additional_config: Any) -> ArcticSettings:
        raw = (
            additional_config.get(SETTINGS_KEY) if isinstance(additional_config, Mapping) else None
        )
        if not isinstance(raw, Mapping):
            raise ArcticConfigError(
                f"{PROPOSER_CLASS} is built by the adapter for method 'arctic'; use "
                f'speculative_config={{"method": "arctic", ...}} with {EXTRAS_ENV}=1, not '
                "method 'custom_class' directly"
            )
        return cls(**raw)


def check_switch() -> None:
    """The method is an opt-in extra: refuse it unless the switch is on (the
    engine processes inherit this environment and need it too)."""
    if not extras_enabled():  # raises ValueError naming the variable on bad values
        raise ArcticConfigError(
            f"this method is an opt-in extra of arctic_inference_vllm; set {EXTRAS_ENV}=1 in "
            "the environment of vLLM (all its processes inherit it)"
        )


def wants_arctic(spec: Mapping[str, Any]) -> bool:
    """Whether a speculative config (flags merged) asks for this method. Any
    other method keeps vLLM's own path, but the arctic-only keys get an error
    naming the method instead of pydantic's "extra inputs"."""
    if spec.get("method") == METHOD:
        return True
    extra = [k for k in ARCTIC_ONLY_KEYS if k in spec]
    if extra:
        raise ValueError(
            f"speculative_config keys {extra} belong to method 'arctic' "
            f"(got method {spec.get('method')!r})"
        )
    return False


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArcticConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_suffix_settings(spec: Mapping[str, Any]) -> None:
    """vLLM validates the suffix_decoding_* fields only for method "suffix";
    the arctic method uses them too, so check them here (start-up, not the
    first request)."""
    from arctic_inference_core.suffix import SuffixDecodingCache

    prob = spec.get("suffix_decoding_min_token_prob", 0.1)
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
        raise ArcticConfigError(f"suffix_decoding_min_token_prob must be in [0, 1], got {prob!r}")
    try:  # the core checks depth and cache size ranges
        SuffixDecodingCache(
            max_tree_depth=spec.get("suffix_decoding_max_tree_depth", 24),
            max_cached_requests=spec.get("suffix_decoding_max_cached_requests", 10000),
        )
    except (TypeError, ValueError) as e:
        raise ArcticConfigError(f"bad suffix decoding setting: {e}") from None


def _check_base_model_archs(
    model: str, trained_for: Sequence[str] | None, served: Sequence[str] | None, skip: bool
) -> None:
    """The speculator's ``base_model_archs`` (config.json) must name the
    served model's architecture, as in Arctic Inference; ``skip`` is the
    user's ``skip_base_model_archs_check``."""
    if skip or not served:
        return
    if trained_for is None:
        log.warning(
            "speculative method 'arctic': speculator %s has no base_model_archs in its "
            "config.json, so the base model's architecture is not checked (its hidden and "
            "vocab sizes are).",
            model,
        )
        return
    if not any(arch in trained_for for arch in served):
        raise ArcticConfigError(
            f"speculator {model!r} was trained for base model architecture(s) "
            f"{list(trained_for)} (base_model_archs in its config.json), but the served model "
            f"is {', '.join(served)}; use a speculator trained for this model, or set "
            f'"{SKIP_ARCHS_KEY}": true in speculative_config if this one fits it anyway'
        )


def _looks_like_repo_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~"))


def _from_hub(model: str) -> str:
    """A Hub repository id (as Arctic Inference's docs name the released
    speculators): its config and weights, downloaded into (or, offline,
    read from) the Hugging Face cache, as vLLM does for served models."""
    if not _looks_like_repo_id(model):
        raise ArcticConfigError(
            f"speculator {model!r} is neither a local directory (config.json and the weights) "
            "nor a Hugging Face Hub repository id ('org/name')"
        )
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(model, allow_patterns=["*.json", *_WEIGHT_FILES]))
    except Exception as e:  # network, authorization, missing repo, offline cache miss
        raise ArcticConfigError(
            f"speculator {model!r}: not a local directory, and fetching it from the Hugging Face "
            f"Hub failed ({type(e).__name__}: {e}); download it first (hf download {model} "
            "--local-dir DIR) and pass DIR"
        ) from None


def _read_speculator(
    model: Any, hidden_size: int, vocab_size: int, architectures: Sequence[str] | None, skip: bool
) -> tuple[str, int]:
    """Check the speculator directory against the base model; returns its
    absolute path and n_predict. Only config.json is read here; the weights
    are loaded (and their names and shapes checked) when the engine loads the
    model."""
    from arctic_inference_core.speculator import SpeculatorConfig

    if not isinstance(model, str) or not model:
        raise ArcticConfigError(
            '"model" must be a speculator directory or a Hugging Face Hub repository id'
        )
    path = os.path.abspath(os.path.expanduser(model))
    if not os.path.isdir(path):
        path = _from_hub(model)
    try:
        config = SpeculatorConfig.from_pretrained(path)
        config.check_compatible(base_hidden_size=hidden_size, base_vocab_size=vocab_size)
    except ValueError as e:
        raise ArcticConfigError(f"speculator {model!r}: {e}") from None
    if not any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES):
        raise ArcticConfigError(f"speculator {model!r} has no weights ({', '.join(_WEIGHT_FILES)})")
    _check_base_model_archs(model, config.base_model_archs, architectures, skip)
    return path, config.n_predict


def translate(
    spec: Mapping[str, Any],
    hidden_size: int,
    vocab_size: int,
    architectures: Sequence[str] | None = None,
) -> tuple[dict[str, Any], ArcticSettings]:
    """Check an arctic speculative_config against the base model (hidden and
    vocab sizes; its ``architectures`` against the speculator's
    ``base_model_archs`` unless ``skip_base_model_archs_check``) and rewrite
    it into a config vLLM accepts (method "custom_class")."""
    check_switch()
    skip = spec.get(SKIP_ARCHS_KEY, False)
    if not isinstance(skip, bool):
        raise ArcticConfigError(f"{SKIP_ARCHS_KEY} must be true or false, got {skip!r}")
    path, n_predict = _read_speculator(
        spec.get("model"), hidden_size, vocab_size, architectures, skip
    )
    suffix = spec.get("enable_suffix_decoding", False)
    if not isinstance(suffix, bool):
        raise ArcticConfigError(f"enable_suffix_decoding must be true or false, got {suffix!r}")
    disable = spec.get("disable_by_batch_size")
    if disable is None:
        disable = DEFAULT_DISABLE_BY_BATCH_SIZE  # Arctic Inference's default
    disable = _positive_int("disable_by_batch_size", disable)
    hard = spec.get("hard_disable_by_batch_size")
    if hard is not None:
        hard = _positive_int("hard_disable_by_batch_size", hard)
    n = spec.get("num_speculative_tokens")
    n = n_predict if n is None else _positive_int("num_speculative_tokens", n)
    if n > n_predict and not suffix:
        # Better an error than a silent clamp: the user asked for more tokens
        # than the heads can draft.
        raise ArcticConfigError(
            f"num_speculative_tokens={n} exceeds the speculator's n_predict={n_predict}; use "
            f"num_speculative_tokens <= {n_predict}, or enable_suffix_decoding for longer "
            f"suffix drafts (the speculator still drafts {n_predict})"
        )
    if suffix:
        _check_suffix_settings(spec)
    settings = ArcticSettings(
        model=path,
        n_predict=n_predict,
        num_speculative_tokens=n,
        enable_suffix_decoding=suffix,
        disable_by_batch_size=disable,
        hard_disable_by_batch_size=hard,
    )
    rewritten = {k: v for k, v in spec.items() if k not in ARCTIC_ONLY_KEYS}
    rewritten.update(method="custom_class", model=PROPOSER_CLASS, num_speculative_tokens=n)
    return rewritten, settings
