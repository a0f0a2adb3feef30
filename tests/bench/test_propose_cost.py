"""bench/propose_cost.py: the adapter's suffix proposer driven in lock step
without an engine, on a few synthetic traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib.synthetic import synthetic_trace_file

pytest.importorskip("mistral_common")
pytest.importorskip("vllm")


def test_script_writes_its_table(load_script, tmp_path: Path) -> None:
    traces = synthetic_trace_file(tmp_path, 6)
    out = tmp_path / "out"
    argv = ["--traces", str(traces), "--concurrency", "1", "4", "--steps", "60", "--warmup", "10",
            "--out-dir", str(out)]  # fmt: skip
    assert load_script("propose_cost").main(argv) == 0
    rows = json.loads((out / "propose_cost.json").read_text())["rows"]
    assert [r["concurrency"] for r in rows] == [1, 4]
    for r in rows:
        assert r["p50_us"] > 0 and r["tokens_per_request_step"] >= 1.0
        assert sum(r["policy"].values()) >= 60  # one choice per timed step at least
    # the synthetic responses repeat themselves: drafts get accepted
    assert max(r["tokens_per_request_step"] for r in rows) > 1.0
    assert "| 4 |" in (out / "propose_cost.md").read_text()
