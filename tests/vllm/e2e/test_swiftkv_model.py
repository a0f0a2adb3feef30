"""SwiftKV in vLLM (extras switch on) on released-layout checkpoints (tiny,
random, written by tests/core/swiftkv/swiftkv_reference.py without the
project's code): greedy tokens equal a plain-PyTorch reading of the layout
for AcrossKV groups of 1 and 2, a mixed batch with a shared prefix, prefix
caching, chunked prefill mixed with decodes, fast prefill off, and tensor
parallelism 2 (two CPU workers, Gloo); with fast prefill on, prompt tokens
skip the later layers and each group reads one KV cache; ``swiftkv: false``
serves the plain Llama. The config hook selects the V1 model runner."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.vllm

# the released layout's writer and reader, shared with the core's tests
sys.path.insert(0, str(Path(__file__).parents[2] / "core" / "swiftkv"))
from swiftkv_reference import reference_greedy, write_checkpoint  # noqa: E402

PROMPTS = [
    "def add(a, b):\n    return",
    "abcabcabcabc",
    "The quick brown fox",
    "x = [1, 2, 3]\nfor i in x:\n",
]
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """6 layers, 2 with their own K/V; later layers in groups of 2 or 1; the
    group-2 one also with ``swiftkv: false``."""
    root = tmp_path_factory.mktemp("swiftkv")
    return {
        "group 2": write_checkpoint(root / "g2", 2, 2),
        "group 1": write_checkpoint(root / "g1", 2, 1, seed=1),
        "swiftkv off": write_checkpoint(root / "off", 2, 2, swiftkv=False),
    }


@pytest.fixture(scope="module")
def prompts(checkpoints: dict[str, Path]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoints["group 2"])
    ids = [tok.encode(p) for p in PROMPTS]
    # the last prompt repeats the first one's prefix: a prefix-cache hit
    return [*ids, ids[0] + tok.encode(" a + b", add_special_tokens=False)]


@pytest.fixture(scope="module")
def reference(checkpoints: dict[str, Path], prompts: list[list[int]]) -> dict[str, list]:
    return {
        name: [reference_greedy(path, p, NEW_TOKENS) for p in prompts]
        for name, path in checkpoints.items()
    }


def vllm_greedy(
    path: Path, prompts: list[list[int]], inspect: bool = True, **kwargs
) -> tuple[list[list[int]], dict]:
    """Greedy tokens, plus what rank 0 saw: rows per forward pass of the last
    full and first later layer, and which writer's cache each later layer
    reads (every rank the same)."""
    from cpu_engine import cpu_llm
    from vllm import SamplingParams, TokensPrompt

    tp = kwargs.get("tensor_parallel_size", 1)
    llm = cpu_llm(
        str(path),
        tp,
        worker_extension_cls="arctic_inference_vllm.diagnostics.SwiftKVInspector",
        **kwargs,
    )
    try:
        if inspect:
            llm.collective_rpc("swiftkv_record_rows")
        outs = llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True),
            use_tqdm=False,
        )
        seen: dict = {
            "fast_prefill": llm.llm_engine.vllm_config.cache_config.kv_sharing_fast_prefill
        }
        if inspect:
            rows, owners = (
                llm.collective_rpc("swiftkv_rows"),
                llm.collective_rpc("swiftkv_cache_owners"),
            )
            assert len(rows) == tp and all(r == rows[0] for r in rows), rows
            assert all(o == owners[0] for o in owners), owners
            seen |= {"rows": rows[0], "owners": owners[0]}
        return [list(o.outputs[0].token_ids) for o in outs], seen
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        del llm
        gc.collect()


# checkpoint, engine arguments
CASES = {
    # 16-token chunks: prompts prefill over several steps, mixed with decodes
    "group1-chunked-prefill": (
        "group 1",
        {"max_num_batched_tokens": 16, "max_num_seqs": 3, "enable_prefix_caching": False},
    ),
    "group1-fast-prefill-off": (
        "group 1",
        {"additional_config": {"arctic_inference": {"swiftkv_fast_prefill": False}}},
    ),
    # two workers, and the last prompt's prefix-cache hit: one engine for
    # both (each start costs ~30 s on 2 cores); group 1 runs on one worker
    "group2-tp2-prefix-caching": (
        "group 2",
        {"tensor_parallel_size": 2, "enable_prefix_caching": True},
    ),
}
OWNERS = {"group 2": [0, 0, 1, 1], "group 1": [0, 1, 2, 3]}


@pytest.mark.parametrize("case", list(CASES))
def test_vllm_matches_the_reference(checkpoints, prompts, reference, switch_on, case: str) -> None:
    ckpt, kwargs = CASES[case]
    got, seen = vllm_greedy(checkpoints[ckpt], prompts, **kwargs)
    assert got == reference[ckpt]
    # AcrossKV: the layers of a group read its writer's cache
    assert seen["owners"] == OWNERS[ckpt]
    rows = seen["rows"]
    assert len(rows) >= NEW_TOKENS
    if case.endswith("fast-prefill-off"):
        assert seen["fast_prefill"] is False
        assert all(later == full for full, later in rows), rows
        return
    assert seen["fast_prefill"] is True
    # one row per scheduled request (its sampled position); prompt tokens stop early
    assert all(later <= min(full, len(prompts)) for full, later in rows), rows
    sampled = len(prompts) * NEW_TOKENS
    partial_chunks = len(rows) if "chunked" in case else 0  # at most one a pass
    assert sampled <= sum(later for _, later in rows) <= sampled + partial_chunks, rows


def test_swiftkv_false_serves_the_plain_llama(checkpoints, prompts, reference, switch_on) -> None:
    got, seen = vllm_greedy(checkpoints["swiftkv off"], prompts, inspect=False)
    assert got == reference["swiftkv off"]
    assert got != reference["group 2"]  # same weights, SwiftKV on: other tokens
    assert seen["fast_prefill"] is False  # the hook leaves a Llama alone


def test_the_config_hook(checkpoints, switch_on, monkeypatch) -> None:
    """patches/swiftkv_config.py (swiftkv/config.py's rules), on the engine
    config vLLM builds (no engine): fast prefill, no compilation, the V1
    model runner (through VLLM_USE_V2_MODEL_RUNNER, logged; V2 refused);
    nothing for swiftkv: false."""
    from vllm.config.compilation import CompilationMode
    from vllm.engine.arg_utils import EngineArgs

    def config(path=checkpoints["group 2"], **kwargs):
        return EngineArgs(model=str(path), max_model_len=512, **kwargs).create_engine_config()

    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    cfg = config()
    assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert cfg.use_v2_model_runner is False
    assert cfg.cache_config.kv_sharing_fast_prefill is True
    assert cfg.compilation_config.mode == CompilationMode.NONE
    off = config(additional_config={"arctic_inference": {"swiftkv_fast_prefill": False}})
    assert off.cache_config.kv_sharing_fast_prefill is False
    # the user's own compilation choice stands
    assert (
        config(compilation_config={"mode": 3}).compilation_config.mode != CompilationMode.NONE
    )  # CPU: mode 2
    with pytest.raises(ValueError, match="swiftkv_fast_prefill"):
        config(additional_config={"arctic_inference": {"swiftkv_fast_prefill": "yes"}})
    # speculative decoding: fast prefill on from vLLM 0.32, off before it
    import arctic_inference_vllm.swiftkv.config as swiftkv_config

    spec = {"method": "suffix", "num_speculative_tokens": 4}
    assert config(speculative_config=spec).cache_config.kv_sharing_fast_prefill is True
    monkeypatch.setattr(swiftkv_config, "_vllm_version", lambda: "0.26.0")
    assert config(speculative_config=spec).cache_config.kv_sharing_fast_prefill is False
    assert config().cache_config.kv_sharing_fast_prefill is True
    monkeypatch.undo()
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    llama = config(checkpoints["swiftkv off"])
    assert llama.cache_config.kv_sharing_fast_prefill is False
    assert llama.compilation_config.mode != CompilationMode.NONE
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    with pytest.raises(ValueError, match="V1 model runner only.*VLLM_USE_V2_MODEL_RUNNER='1'"):
        config()
