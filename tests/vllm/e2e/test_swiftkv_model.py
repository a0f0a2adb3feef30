"""SwiftKV Llama in vLLM (extras switch on): a tiny random SwiftKV checkpoint
made from a tiny Llama serves in vLLM with greedy tokens equal to the
reference transformers model, one request or a mixed batch, with prefix
caching on and off, chunked prefill mixed with decodes, and fast prefill
off. With fast prefill on, prompt tokens skip the later layers; each AcrossKV
group reads one KV cache."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.vllm

PROMPTS = [
    "def add(a, b):\n    return",
    "abcabcabcabc",
    "The quick brown fox",
    "x = [1, 2, 3]\nfor i in x:\n",
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def swiftkv_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from arctic_inference_core.swiftkv.hf_llama import SwiftKVLlamaForCausalLM
    from arctic_inference_vllm.testing import save_byte_tokenizer

    path = tmp_path_factory.mktemp("swiftkv")
    vocab = save_byte_tokenizer(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    llama = LlamaForCausalLM(cfg)
    with torch.no_grad():
        llama.lm_head.weight.mul_(8.0)  # fewer near-ties
    # 2 full layers, 3 later layers in AcrossKV groups of 2 (slots: {2, 3}, {4})
    model = SwiftKVLlamaForCausalLM.from_llama(
        llama, num_key_value_layers=2, key_value_group_size=2, reduce="mean"
    )
    model.to(torch.float32).save_pretrained(path, safe_serialization=True)
    return path


def reference_greedy(path: Path, prompt_ids: list[int]) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt_ids) :]


def vllm_greedy(path: Path, prompts: list[list[int]], **kwargs) -> tuple[list[list[int]], dict]:
    """Greedy tokens, plus what the workers saw: rows per forward pass of the
    last full and first later layer, and which writer's cache each later
    layer reads."""
    from vllm import LLM, SamplingParams, TokensPrompt

    llm = LLM(
        model=str(path),
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        gpu_memory_utilization=0.1,
        seed=0,
        worker_extension_cls="arctic_inference_vllm.diagnostics.SwiftKVInspector",
        **kwargs,
    )
    try:
        llm.collective_rpc("swiftkv_record_rows")
        outs = llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True),
            use_tqdm=False,
        )
        (rows,) = llm.collective_rpc("swiftkv_rows")
        (owners,) = llm.collective_rpc("swiftkv_cache_owners")
        fast_prefill = llm.llm_engine.vllm_config.cache_config.kv_sharing_fast_prefill
        return [list(o.outputs[0].token_ids) for o in outs], {
            "rows": rows,
            "owners": owners,
            "fast_prefill": fast_prefill,
        }
    finally:
        del llm
        gc.collect()


@pytest.fixture(scope="module")
def switch_on(extras_switch):
    import arctic_inference_vllm.plugin as plugin

    with extras_switch():
        plugin.install_extras()  # this process registered before the switch was on
        yield


CASES = {
    "fast prefill": {},
    "prefix caching": {"enable_prefix_caching": True},
    # 16-token chunks: prompts prefill over several steps, mixed with decodes
    "chunked prefill": {
        "max_num_batched_tokens": 16,
        "max_num_seqs": 3,
        "enable_prefix_caching": False,
    },
    "fast prefill off": {
        "additional_config": {"arctic_inference": {"swiftkv_fast_prefill": False}}
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_vllm_matches_the_reference(swiftkv_model: Path, switch_on, case: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(swiftkv_model)
    prompts = [tok.encode(p) for p in PROMPTS]
    # the last prompt repeats the first one's prefix: a prefix-cache hit when caching is on
    prompts.append(prompts[0] + tok.encode(" a + b", add_special_tokens=False))
    want = [reference_greedy(swiftkv_model, p) for p in prompts]
    got, seen = vllm_greedy(swiftkv_model, prompts, **CASES[case])
    assert got == want
    # later layers 2, 3 read slot 0's cache, layer 4 slot 1's (AcrossKV groups of 2)
    assert seen["owners"] == [0, 0, 1]
    rows = seen["rows"]
    assert len(rows) >= NEW_TOKENS
    if case == "fast prefill off":
        assert seen["fast_prefill"] is False
        assert all(later == full for full, later in rows), rows
        return
    assert seen["fast_prefill"] is True
    # one row per scheduled request (its sampled position); prompt tokens stop early
    assert all(later <= min(full, len(prompts)) for full, later in rows), rows
    sampled = len(prompts) * NEW_TOKENS
    partial_chunks = len(rows) if case == "chunked prefill" else 0  # at most one a pass
    assert sampled <= sum(later for _, later in rows) <= sampled + partial_chunks, rows


def test_the_config_hook_sets_fast_prefill_and_no_compilation(
    swiftkv_model: Path, switch_on
) -> None:
    """patches/swiftkv_config.py (swiftkv/config.py's rules), on the engine
    config vLLM builds (no engine)."""
    from vllm.config.compilation import CompilationMode
    from vllm.engine.arg_utils import EngineArgs

    def config(**kwargs):
        return EngineArgs(
            model=str(swiftkv_model), max_model_len=512, **kwargs
        ).create_engine_config()

    cfg = config()
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
