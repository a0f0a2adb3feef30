"""Real vLLM (CPU) test fixtures: a tiny random Llama built once per session
and engines shared per module (each start costs ~15 s on 2 cores)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm")
sys.path.insert(0, str(Path(__file__).parent))
from arctic_inference_vllm.testing import build_tiny_llama  # noqa: E402

ENGINE_KWARGS = dict(
    max_model_len=512, gpu_memory_utilization=0.1, enforce_eager=True, seed=0,
    worker_extension_cls="arctic_inference_vllm.diagnostics.SuffixCacheInspector",
)


SWITCH = "ARCTIC_INFERENCE_VLLM_EXTRAS"


@contextlib.contextmanager
def extras_switch() -> Iterator[None]:
    """The opt-in switch on for this process and the engine processes it
    starts; restored afterwards."""
    old = os.environ.get(SWITCH)
    os.environ[SWITCH] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = old


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def make_llm(model: str, spec: dict | None = None, **kwargs):
    from vllm import LLM

    return LLM(model=model, speculative_config=spec, disable_log_stats=False,
               **{**ENGINE_KWARGS, **kwargs})
