"""Optional dependencies: torch is needed only by some parts of the core."""

from __future__ import annotations

import importlib
from types import ModuleType


def require_torch(part: str) -> ModuleType:
    """Import torch, or explain how to get it for ``part``."""
    try:
        return importlib.import_module("torch")
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"arctic_inference_core.{part} needs PyTorch: pip install 'arctic-inference-core[torch]'"
        ) from e
