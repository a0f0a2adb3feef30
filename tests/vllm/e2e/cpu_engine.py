"""One builder for the e2e tests' own CPU engines: float32, eager, a small
explicit KV cache (fast start-up), the cores shared among ``ranks``."""

from __future__ import annotations

import os
from typing import Any


def cpu_llm(model: str, ranks: int = 1, **kwargs: Any) -> Any:
    """``vllm.LLM(model, ...)`` with the tests' settings; ``kwargs`` add to
    or replace them."""
    from vllm import LLM

    from arctic_inference_vllm.testing import TEST_KV_CACHE_BYTES, cpu_binding

    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(ranks)
    settings: dict[str, Any] = {
        "dtype": "float32",
        "max_model_len": 512,
        "enforce_eager": True,
        "seed": 0,
        "kv_cache_memory_bytes": TEST_KV_CACHE_BYTES,
    }
    return LLM(model=model, **{**settings, **kwargs})
