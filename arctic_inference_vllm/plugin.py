"""The ``vllm.general_plugins`` entry point.

vLLM calls :func:`register` once in every process (front end, engine core,
workers), so it must be idempotent and fast. It checks the vLLM version,
applies the front-end patches of the manifest (patches/__init__.py: the
suffix decoding backend, and the ``arctic`` method's front-end hook, which
changes nothing for other configs; the method itself, like every extra, is
refused unless the opt-in switch is on where it is used), with the switch on
also the extras' patches and model registrations, and logs one start-up line
(in the first process with vLLM logging set up; its children inherit a
marker).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable

from arctic_inference_core import __version__ as core_version
from arctic_inference_vllm import envs, versions
from arctic_inference_vllm.patches import Patch, Phase, apply_phase

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


def _report(log: logging.Logger, vllm_version: str) -> Callable[[Patch, Exception], None]:
    def report(patch: Patch, error: Exception) -> None:
        log.warning(
            "arctic_inference_vllm: patch %s does not fit vLLM %s (%s); %s.",
            patch.name,
            vllm_version,
            error,
            patch.without,
        )

    return report


def install_extras(log: logging.Logger | None = None) -> None:
    """The extras: SwiftKV architectures through vLLM's public ModelRegistry,
    then the extras' patches. :func:`register` calls it with the switch on
    (tests call it too, in a process that registered before turning the
    switch on)."""
    log = log or _logger()
    vllm_version, _ = _vllm_version()
    from arctic_inference_vllm.swiftkv import registry

    try:
        registry.register_models()
    except ImportError as e:
        log.warning("arctic_inference_vllm: SwiftKV models are unavailable (%s).", e)
    apply_phase(Phase.FRONT_END_EXTRAS, on_error=_report(log, vllm_version))


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

    applied = apply_phase(
        Phase.FRONT_END, vllm_supported=supported, on_error=_report(log, vllm_version)
    )
    suffix = "on" if "suffix_backend" in applied else "off"
    if extras:
        install_extras(log)

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
