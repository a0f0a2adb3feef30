"""Environment switches of the vLLM adapter (read at plugin load)."""

from __future__ import annotations

import functools
import importlib.metadata
import os

# The one opt-in switch: every feature beyond native suffix decoding stays
# off (and vLLM untouched by it) unless this is "1".
EXTRAS_ENV = "ARCTIC_INFERENCE_VLLM_EXTRAS"
# Arctic Inference's own switch, read as an alias so that its users' command
# lines run unchanged once this project replaces it; ignored while
# arctic-inference itself is installed (there it turns on that plugin).
LEGACY_ENV = "ARCTIC_INFERENCE_ENABLED"


def _parse(name: str, value: str) -> bool:
    value = value.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={value!r}: use 1 to enable or 0 to disable")


@functools.cache
def arctic_inference_installed() -> bool:
    try:
        importlib.metadata.distribution("arctic-inference")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def extras_enabled() -> bool:
    """The switch; unset, Arctic Inference's ``ARCTIC_INFERENCE_ENABLED``
    stands for it (unless arctic-inference is installed too)."""
    value = os.environ.get(EXTRAS_ENV)
    if value is not None:
        return _parse(EXTRAS_ENV, value)
    legacy = os.environ.get(LEGACY_ENV)
    if legacy is None or arctic_inference_installed():
        return False
    return _parse(LEGACY_ENV, legacy)
