"""The ``vllm.general_plugins`` entry point.

vLLM calls :func:`register` once in every process (front end, engine core,
workers), so it must be idempotent and fast. It installs the suffix decoding
backend, checks the vLLM version, and logs one start-up line (in the first
process with vLLM logging set up; its children inherit a marker). It also
installs the front-end hook of the ``arctic`` speculative method, which
changes nothing for other configs; the method itself, like every extra, is
refused unless the opt-in switch is on where it is used.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from arctic_inference_core import __version__ as core_version
from arctic_inference_vllm import envs, versions

_LOGGED_MARKER = "_ARCTIC_INFERENCE_VLLM_LOGGED"
_registered = False


def _logger() -> logging.Logger:
    try:
        from vllm.logger import init_logger

        return init_logger("vllm.arctic_inference")  # under vLLM's configured logger
    except Exception:  # pragma: no cover - vLLM without its logger module
        return logging.getLogger("arctic_inference_vllm")


def _extras_wanted(log: logging.Logger) -> bool:
    try:
        return envs.extras_enabled()
    except ValueError as e:
        log.error("%s; extras stay off", e)
        return False


def _install_front_end(log: logging.Logger, vllm_version: str) -> None:
    """The ``arctic`` method's front-end hook. Installed with the switch off
    too: it passes every other config through untouched, and an arctic one
    then fails with an error naming the switch (vLLM alone would only say
    that 'arctic' is not a method)."""
    from arctic_inference_vllm.patches import arctic_config

    try:
        arctic_config.apply()
    except (ImportError, AttributeError) as e:
        log.warning(
            "arctic_inference_vllm: speculative method 'arctic' is unavailable on vLLM %s (%s).",
            vllm_version,
            e,
        )


def _register_models(log: logging.Logger) -> None:
    """Extras: model architectures, through vLLM's public ModelRegistry (lazy:
    the model module is imported only when a checkpoint asks for it)."""
    try:
        from vllm import ModelRegistry

        import arctic_inference_core.swiftkv.hf_llama  # noqa: F401  registers the HF config
        from arctic_inference_vllm.models import MODELS
        from arctic_inference_vllm.patches import swiftkv_config

        for arch, target in MODELS.items():
            if arch not in ModelRegistry.get_supported_archs():
                ModelRegistry.register_model(arch, target)
        swiftkv_config.apply()  # the architecture's config hook: fast prefill on
    except ImportError as e:
        log.warning("arctic_inference_vllm: SwiftKV models are unavailable (%s).", e)


def _install_ulysses(log: logging.Logger) -> None:
    """Extras: the Ulysses flag and start-up checks (front end; the workers'
    side is selected per deployment through worker_cls)."""
    from arctic_inference_vllm.patches import ulysses_args

    try:
        ulysses_args.apply()
    except (ImportError, AttributeError) as e:
        log.warning("arctic_inference_vllm: Ulysses sequence parallelism is unavailable (%s).", e)


def _vllm_version() -> tuple[str, bool]:
    import vllm

    version = getattr(vllm, "__version__", "unknown")
    return version, versions.is_supported(version) if version != "unknown" else False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    log = _logger()
    vllm_version, supported = _vllm_version()
    if not supported:
        log.warning(
            "arctic_inference_vllm supports vLLM %s; found %s. Trying the native suffix "
            "backend anyway; other features stay off.",
            versions.SUPPORTED_RANGE,
            vllm_version,
        )
    extras = supported and _extras_wanted(log)

    from arctic_inference_vllm.patches import suffix_backend

    try:
        suffix_backend.apply()
        suffix = "on"
    except (ImportError, AttributeError) as e:
        suffix = "off"
        log.warning(
            "arctic_inference_vllm could not install its suffix decoding backend on vLLM %s "
            "(%s); vLLM's own suffix path is unchanged.",
            vllm_version,
            e,
        )

    if supported:
        _install_front_end(log, vllm_version)
    if extras:
        _register_models(log)
        _install_ulysses(log)

    # One line per deployment: in the first process where vLLM's logging is
    # configured (the engine core; the front end loads plugins before that),
    # then never again in its children.
    if os.environ.get(_LOGGED_MARKER) != "1" and logging.getLogger("vllm").handlers:
        os.environ[_LOGGED_MARKER] = "1"
        log.info(
            "arctic_inference_vllm %s (arctic_inference_core %s) on vLLM %s: suffix "
            "decoding backend %s; extras (%s) %s.",
            core_version,
            core_version,
            vllm_version,
            suffix,
            envs.EXTRAS_ENV,
            "on" if extras else "off",
        )
        if importlib.util.find_spec("arctic_inference") is not None and suffix == "on":
            log.info(
                "Snowflake's arctic-inference is also installed; suffix decoding uses "
                "arctic_inference_core."
            )
