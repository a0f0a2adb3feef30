"""Real vLLM (CPU) test fixtures: a tiny random Llama built once per session
and engines shared per module (each start costs ~15 s on 2 cores)."""

from __future__ import annotations

import contextlib
import gc
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
from arctic_inference_vllm.testing import (  # noqa: E402
    TEST_KV_CACHE_BYTES,
    build_tiny_llama,
    cpu_dtype,
)

ENGINE_KWARGS = dict(
    dtype=cpu_dtype(),  # the CPU benchmarks' rule: bf16 only where the CPU has it natively
    max_model_len=512,
    kv_cache_memory_bytes=TEST_KV_CACHE_BYTES,
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
def plain_greedy(tiny_model: str) -> dict[str, list[int]]:
    """Greedy tokens (e2e/greedy_reference.py's MAX_TOKENS, no speculation)
    of ``tiny_model`` for every prompt of e2e/greedy_reference.py, from one
    engine, gone before the tests start theirs (engines in one process share
    vLLM's metrics registry)."""
    from greedy_reference import ARCTIC_PROMPTS, MAX_TOKENS, SUFFIX_PROMPTS
    from vllm import SamplingParams

    prompts = list(dict.fromkeys(SUFFIX_PROMPTS + ARCTIC_PROMPTS))
    llm = _make_llm(tiny_model)
    try:
        greedy = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
        outs = llm.generate(prompts, greedy, use_tqdm=False)
        return {p: list(o.outputs[0].token_ids) for p, o in zip(prompts, outs, strict=True)}
    finally:
        del llm
        gc.collect()


@pytest.fixture(scope="session")
def extras_switch():
    """A context manager: the opt-in switch on for this process and the
    engine processes it starts, restored afterwards."""
    return _extras_switch


@pytest.fixture(scope="module")
def switch_on(extras_switch):
    """The switch on for a module's tests, with the extras' front-end patches
    (the Ulysses and shift flags) installed: this process registered the
    plugin before the switch was on. (test_arctic_method.py has its own.)"""
    import arctic_inference_vllm.plugin as plugin

    with extras_switch():
        plugin.install_extras()
        yield


@pytest.fixture(scope="session")
def tiny4(tmp_path_factory: pytest.TempPathFactory) -> str:
    """4 query heads, 2 K/V heads: splits over TP=2 x SP=2 without replication."""
    return str(
        build_tiny_llama(
            tmp_path_factory.mktemp("tiny4"), num_attention_heads=4, num_key_value_heads=2
        )
    )


@pytest.fixture(scope="session")
def tiny4_sp1(tiny4: str) -> dict:
    """The SP=1 reference on ``tiny4`` (e2e/sp_engine.py) that the Ulysses
    and shift-parallel tests compare against: one engine start for both."""
    from sp_engine import run

    with _extras_switch():
        return run(tiny4, sp=1)


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
