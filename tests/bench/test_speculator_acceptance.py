"""bench/speculator_acceptance.py end to end on a tiny random Llama (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPTS = [f"{w} item {i}: " for i in range(6) for w in ("alpha", "beta", "gamma", "delta")]


def test_heads_and_suffix_are_compared_on_the_same_held_out_outputs(
    load_script, tmp_path: Path
) -> None:
    from arctic_inference_vllm.testing import build_tiny_llama

    model = build_tiny_llama(tmp_path / "tiny")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    mod = load_script("speculator_acceptance")
    out = tmp_path / "out"
    assert (
        mod.main(
            [
                "--base-model",
                str(model),
                "--prompts",
                str(prompts),
                "--heads",
                "lstm:64",
                "mlp:32",
                "--steps",
                "120",
                "--batch-size",
                "64",
                "--lr",
                "3e-3",
                "--max-new-tokens",
                "24",
                "--num-eval",
                "4",
                "--eval-every",
                "60",
                "--gen-batch-size",
                "8",
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads((out / "speculator_acceptance.json").read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    assert list(rows) == ["suffix", "lstm:64", "lstm:64 + suffix", "mlp:32", "mlp:32 + suffix"]
    assert doc["meta"]["held_out"] == 4 and doc["meta"]["train_prompts"] == 20
    for r in rows.values():
        acc = r["acceptance"]
        assert len(acc) == 3 and 1.0 >= acc[0] >= acc[1] >= acc[2] >= 0.0
        assert r["tokens_per_step"] >= 1.0
    # the looping outputs are learnable: trained heads beat an untrained one by far
    assert rows["lstm:64"]["train_history"][0]["mean_accepted_length"] < 0.2
    assert sum(rows["lstm:64"]["acceptance"]) > 0.8
    assert rows["lstm:64"]["tokens_per_step"] > 1.5
    assert (out / "lstm-64" / "speculator" / "config.json").is_file()
    assert "| suffix |" in (out / "speculator_acceptance.md").read_text()
