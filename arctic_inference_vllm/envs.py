"""Environment switches of the vLLM adapter (read at plugin load)."""

from __future__ import annotations

import os

# The one opt-in switch: every feature beyond native suffix decoding stays
# off (and vLLM untouched by it) unless this is "1".
EXTRAS_ENV = "ARCTIC_INFERENCE_VLLM_EXTRAS"


def extras_enabled() -> bool:
    value = os.environ.get(EXTRAS_ENV, "0").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{EXTRAS_ENV}={value!r}: use 1 to enable or 0 to disable")
