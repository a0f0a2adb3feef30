"""The benchmark stand-in (bench/standin): a small Llama plus a heavy stack of
decoder layers and a vocabulary projection whose results are computed every
step yet leave the small model's tokens and log-probabilities unchanged. On
CPU vLLM with a tiny heavy shape: greedy tokens and top logprobs equal the
small model's (transformers), and the heavy layers hold KV caches of their own."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")
standin = pytest.importorskip("arctic_bench_standin.make")

# The heavy stack at a size two cores serve quickly.
TINY_HEAVY = dict(
    num_hidden_layers=2,
    hidden_size=128,
    intermediate_size=256,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    vocab_size=1000,
    rms_norm_eps=1e-5,
    rope_theta=5e5,
)
PROMPTS = ["def add(a, b):\n    return a + b\n", "abcabcabcabc", "The quick brown fox"]
MAX_TOKENS = 24


def reference_tokens(model: str) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    out = []
    for p in PROMPTS:
        ids = torch.tensor([tok(p).input_ids])
        gen = hf.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=None)
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


def test_standin_keeps_the_small_models_tokens(tiny_model: str, tmp_path: Path) -> None:
    from vllm import LLM, SamplingParams

    from arctic_inference_vllm.testing import TEST_KV_CACHE_BYTES

    path = standin.make_standin(Path(tiny_model), tmp_path / "standin", TINY_HEAVY)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["StandInLlamaForCausalLM"]
    llm = LLM(
        model=str(path),
        dtype="float32",
        max_model_len=256,
        kv_cache_memory_bytes=TEST_KV_CACHE_BYTES,
        enforce_eager=True,
        seed=0,
        worker_extension_cls="arctic_bench_standin.model.StandInInspector",
    )
    try:
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=3, ignore_eos=True)
        outs = llm.generate(PROMPTS, params, use_tqdm=False)
        layers = llm.collective_rpc("standin_kv_cache_layers")[0]
    finally:
        del llm
        gc.collect()
    assert [list(o.outputs[0].token_ids) for o in outs] == reference_tokens(tiny_model)
    # 2 small layers + 2 heavy layers, each with its own cache
    assert len(layers) == 4 and sum("heavy_layers" in n for n in layers) == 2, layers


def test_make_rejects_what_it_cannot_build(tmp_path: Path, tiny_model: str) -> None:
    with pytest.raises(ValueError, match="no config.json"):
        standin.make_standin(tmp_path, tmp_path / "out", TINY_HEAVY)
    with pytest.raises(ValueError, match="lacks"):
        standin.make_standin(Path(tiny_model), tmp_path / "out", {"hidden_size": 64})


def test_standin_check_report(load_script) -> None:
    """The check's table: ratios against the Llama-8B row, and the greedy line."""
    mod = load_script("standin_check")
    args = mod.argparse.Namespace(
        batch_sizes=[1, 16], prefill_tokens=512, prompt_len=128, steps=64, repeats=3,
        check_tokens=8, check_prompt_len=1024, device_name="GPU X",
    )  # fmt: skip
    rows = {
        "base": {"decode_ms": {"1": 1.0, "16": 2.0}, "prefill_ms": 4.0, "tokens": [[1, 2], [3, 4]]},
        "standin": {"decode_ms": {"1": 5.5, "16": 6.0}, "prefill_ms": 16.0, "tokens": [[1, 2], [3, 5]]},
        "llama-8b": {"decode_ms": {"1": 5.0, "16": 6.0}, "prefill_ms": 16.0},
    }  # fmt: skip
    md = mod.report(args, rows, "base model")
    assert "| standin | 5.50 (1.10x) | 6.00 (1.00x) | 16.00 (1.00x) |" in md, md
    assert "| base | 1.00 (0.20x) |" in md, md
    assert "1/2 prompts identical over 8 tokens; first differences at 1" in md, md
