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
# Worker extensions of the tests (e2e/arctic_probe.py) are loaded by name in
# vLLM's worker processes, which inherit this path.
sys.path.insert(0, str(Path(__file__).parent / "e2e"))
# The `vllm serve` launcher is shared with the benchmarks (bench/benchlib).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from benchlib.serve import ServerError, serving  # noqa: E402

from arctic_inference_vllm.envs import EXTRAS_ENV  # noqa: E402
from arctic_inference_vllm.testing import build_tiny_llama, cpu_dtype  # noqa: E402

ENGINE_KWARGS = dict(
    dtype=cpu_dtype(),  # the CPU benchmarks' rule: bf16 only where the CPU has it natively
    max_model_len=512,
    gpu_memory_utilization=0.1,
    enforce_eager=True,
    seed=0,
    worker_extension_cls="arctic_inference_vllm.diagnostics.SuffixCacheInspector",
)


@contextlib.contextmanager
def _extras_switch() -> Iterator[None]:
    """The opt-in switch on for this process and the engine processes it
    starts; restored afterwards."""
    old = os.environ.get(EXTRAS_ENV)
    os.environ[EXTRAS_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(EXTRAS_ENV, None)
        else:
            os.environ[EXTRAS_ENV] = old


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def _make_llm(model: str, spec: dict | None = None, **kwargs):
    from vllm import LLM

    return LLM(
        model=model, speculative_config=spec, disable_log_stats=False, **{**ENGINE_KWARGS, **kwargs}
    )


@pytest.fixture(scope="session")
def extras_switch():
    """A context manager: the opt-in switch on for this process and the
    engine processes it starts, restored afterwards."""
    return _extras_switch


@pytest.fixture(scope="session")
def make_llm():
    """``make_llm(model, spec=None, **engine_kwargs)``: an offline engine with
    the tests' defaults (small KV cache, eager, stats on)."""
    return _make_llm


@contextlib.contextmanager
def _serving(model: str, args: list[str], log: Path, env: dict[str, str]) -> Iterator[str]:
    """`vllm serve MODEL` (bench/benchlib/serve.py) as model "tiny" (512
    tokens, a small KV cache) plus ``args``, output to ``log``; yields its
    base URL once healthy and stops it after."""
    try:
        with serving(model, args, log, env) as server:
            yield server.base_url
    except ServerError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def vllm_server():
    """``with vllm_server(model, args, log, env) as base_url:`` a real
    `vllm serve` (bench/benchlib/serve.py) for the block."""
    return _serving
