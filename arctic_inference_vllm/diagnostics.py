"""Introspection for tests and debugging, through vLLM's public worker
extension hook: start vLLM with
``worker_extension_cls="arctic_inference_vllm.diagnostics.SuffixCacheInspector"``
and call ``llm.collective_rpc("suffix_cache_state")``."""

from __future__ import annotations

from typing import Any


class SuffixCacheInspector:
    """Mixed into vLLM's worker class by ``worker_extension_cls``."""

    def suffix_cache_state(self) -> dict[str, Any]:
        """The proposer class, and counts of its suffix cache after checking
        every invariant of the trees."""
        runner = getattr(self, "model_runner", None)
        drafter = getattr(runner, "drafter", None)
        cache = getattr(drafter, "suffix_cache", None)
        if cache is None:
            return {"proposer": type(drafter).__name__, "active": None}
        cache.check_integrity()
        return {
            "proposer": type(drafter).__name__,
            "active": len(cache.active_requests),
            "cached": len(cache.cached_requests),
            "tokens": cache.num_cached_tokens(),
        }
