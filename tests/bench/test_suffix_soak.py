"""bench/suffix_soak.py end to end at a small size: the cache fills to
max_cached_requests, eviction holds the cached tokens there, the memory
plateaus and returns to the empty cache's after eviction, and the report and
results file carry those numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_suffix_soak_reports_the_plateau(load_script, tmp_path: Path) -> None:
    mod = load_script("suffix_soak")
    argv = ["--tokens", "60000", "--response-tokens", "500", "--prompt-tokens", "100",
            "--max-cached-requests", "40", "--every", "20", "--corpus-tokens", "50000",
            "--out-dir", str(tmp_path)]  # fmt: skip
    assert mod.main(argv) == 0  # both checks hold
    doc = json.loads((tmp_path / "suffix_soak.json").read_text())
    samples = doc["samples"]
    assert [s["requests"] for s in samples] == [20, 40, 60, 80, 100, 120]
    assert [s["cached_tokens"] for s in samples] == [10000] + [20000] * 5  # 40 x 500
    assert all(s["bytes_per_token"] > 0 for s in samples)
    assert doc["after_eviction"]["tree_bytes"] == doc["floor"]["tree_bytes"] > 0
    assert doc["checks"] == {"plateau": True, "returns_to_floor": True}
    md = (tmp_path / "suffix_soak.md").read_text()
    assert "Plateau (cache full)" in md and "After evicting every cached response" in md
    assert "Versions:" in md


def test_suffix_soak_rejects_bad_sizes(load_script, capsys) -> None:
    mod = load_script("suffix_soak")
    with pytest.raises(SystemExit) as e:
        mod.main(["--tokens", "0"])
    assert e.value.code == 2
    assert "--tokens must be >= 1" in capsys.readouterr().err
