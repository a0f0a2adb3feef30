"""What a SwiftKV checkpoint (``swiftkv: true``) changes in vLLM's engine
config (applied by the architecture's config hook, patches/swiftkv_config.py).
A checkpoint with ``swiftkv: false`` is served as the original Llama and
changes nothing.

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
* vLLM's V1 model runner, the one this project runs and tests SwiftKV on
  (vLLM on CPU has only that one; on GPU, vLLM >= 0.26 picks its V2 runner
  by default where it can: 0.32 also with fast prefill, 0.26 with fast
  prefill off). The supported setting is the environment variable
  ``VLLM_USE_V2_MODEL_RUNNER``, read by ``VllmConfig.use_v2_model_runner`` in
  every process: unset, it is set to ``0`` here (logged), before vLLM starts
  its engine and worker processes, which inherit it; it stays set in this
  process. Set to ``1`` by the user, the hook refuses the model.

* Fast prefill stays off with speculative decoding on vLLM before 0.32:
  there vLLM's fast-prefill attention builder asserts that every step of
  more than one token per request has its logits rows armed, and the CUDA
  graph capture of a speculative decode step (1 + k tokens per request)
  never arms them (the engine fails at start-up; seen on vLLM 0.26.0 with an
  H200). vLLM 0.32 runs such steps on the full batch instead.

Opt out of fast prefill (every token runs every layer; prompt logprobs are
right): ``additional_config={"arctic_inference": {"swiftkv_fast_prefill": false}}``.
Under Ulysses sequence parallelism (``ulysses_sequence_parallel_size`` > 1,
shift parallelism included) fast prefill stays off: its rows are the
step's, while each SP rank's forward holds a slice of them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from arctic_inference_vllm.settings import adapter_settings

RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"
_FALSE = ("0", "false", "False")


def _vllm_version() -> str:
    import vllm

    return str(vllm.__version__)


def select_v1_runner(vllm_config: Any, log: logging.Logger | None = None) -> None:
    """Pin vLLM's V1 model runner through ``VLLM_USE_V2_MODEL_RUNNER=0`` (see
    the module docstring); ValueError when the user asked for V2, or when
    vLLM would still pick V2 (a feature that needs it)."""
    value = os.environ.get(RUNNER_ENV)
    if value is None:
        os.environ[RUNNER_ENV] = "0"
        if log is not None:
            log.info(
                "SwiftKV: vLLM's V1 model runner (%s=0 set), the runner this adapter "
                "tests SwiftKV on.",
                RUNNER_ENV,
            )
    elif value.strip() not in _FALSE:
        raise ValueError(
            f"SwiftKV (LlamaSwiftKVForCausalLM, swiftkv: true) runs on vLLM's V1 model runner "
            f"only, the one it is tested on; {RUNNER_ENV}={value!r} asks for V2. Unset it "
            "(the adapter then selects V1) or set it to 0."
        )
    if getattr(vllm_config, "use_v2_model_runner", False):
        raise ValueError(
            "SwiftKV runs on vLLM's V1 model runner only, but this configuration needs the "
            "V2 runner (see vLLM's log for the feature that requires it)."
        )


# The first vLLM whose fast-prefill builder takes steps it was not armed
# for (multi-token decode graphs of speculative decoding); checked: 0.26.0
# asserts, 0.32.0 runs them on the full batch.
FAST_PREFILL_WITH_SPEC_VLLM = (0, 32)


def fast_prefill_blocked(vllm_config: Any, vllm_version: str) -> bool:
    """Whether fast prefill must stay off: speculative decoding on a vLLM
    older than :data:`FAST_PREFILL_WITH_SPEC_VLLM`."""
    from arctic_inference_vllm.versions import parse

    spec = getattr(vllm_config, "speculative_config", None)
    return spec is not None and parse(vllm_version)[:2] < FAST_PREFILL_WITH_SPEC_VLLM


def update_config(vllm_config: Any, log: logging.Logger | None = None) -> None:
    from vllm.config.compilation import CompilationMode, CUDAGraphMode

    if not getattr(vllm_config.model_config.hf_config, "swiftkv", False):
        return  # the original Llama: vLLM's defaults
    select_v1_runner(vllm_config, log)
    settings = adapter_settings(vllm_config)
    sp = settings.ulysses_sequence_parallel_size
    if sp > 1:
        # Fast prefill's rows are the step's; an SP rank holds a slice of them.
        if vllm_config.cache_config.kv_sharing_fast_prefill:
            raise ValueError(
                f"SwiftKV under Ulysses sequence parallelism (SP={sp}) runs without "
                "kv_sharing_fast_prefill; drop --kv-sharing-fast-prefill"
            )
        if settings.swiftkv_fast_prefill and log is not None:
            log.info(
                "SwiftKV: fast prefill off under Ulysses sequence parallelism (SP=%d): "
                "prompt tokens run every layer.",
                sp,
            )
    elif settings.swiftkv_fast_prefill and fast_prefill_blocked(vllm_config, _vllm_version()):
        if log is not None:
            log.info(
                "SwiftKV: fast prefill off with speculative decoding on vLLM %s (its "
                "fast-prefill attention cannot capture speculative decode steps before 0.32): "
                "prompt tokens run every layer.",
                _vllm_version(),
            )
    elif settings.swiftkv_fast_prefill:
        vllm_config.cache_config.kv_sharing_fast_prefill = True
    compilation = vllm_config.compilation_config
    if compilation.mode is None:  # None: not set by the user
        compilation.mode = CompilationMode.NONE
    if compilation.cudagraph_mode is None:
        compilation.cudagraph_mode = CUDAGraphMode.FULL_DECODE_ONLY
