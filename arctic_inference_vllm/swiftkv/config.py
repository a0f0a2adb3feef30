"""What a SwiftKV checkpoint changes in vLLM's engine config (applied by the
architecture's config hook, patches/swiftkv_config.py).

* ``kv_sharing_fast_prefill`` on, unless ``swiftkv_fast_prefill`` is false:
  SwiftKV's prefill saving comes from vLLM's fast-prefill path (attention
  metadata of the trailing KV-sharing layers restricted to the tokens whose
  logits are read; swiftkv/llama.py). vLLM reads the flag in the front end
  (refusing ``prompt_logprobs``, which fast prefill cannot give) and in the
  model runner, both before the model is built, so the model cannot set it
  itself.
* Unless the user configured compilation: no torch.compile and full CUDA
  graphs for decode-only steps. The model is not compiled (its row selection
  is data-dependent); in vLLM's default compile mode its norms and
  activations would then run as plain PyTorch ops, which the compiler was
  meant to fuse (0.79x the eager speed on an H200); without compilation they
  are vLLM's CUDA kernels. vLLM's own hook for LongCat-Flash makes the same
  choice (mode NONE, full graphs; here for decode-only steps: vLLM 0.26
  cannot capture fast-prefill metadata for mixed batches).

Opt out of fast prefill (every token runs every layer; prompt logprobs are
right): ``additional_config={"arctic_inference": {"swiftkv_fast_prefill": false}}``.
"""

from __future__ import annotations

from typing import Any

from arctic_inference_vllm.settings import adapter_settings


def update_config(vllm_config: Any) -> None:
    from vllm.config.compilation import CompilationMode, CUDAGraphMode

    if adapter_settings(vllm_config).swiftkv_fast_prefill:
        vllm_config.cache_config.kv_sharing_fast_prefill = True
    compilation = vllm_config.compilation_config
    if compilation.mode is None:  # None: not set by the user
        compilation.mode = CompilationMode.NONE
    if compilation.cudagraph_mode is None:
        compilation.cudagraph_mode = CUDAGraphMode.FULL_DECODE_ONLY
