"""bench/suffix_concurrent.py: the concurrent replay's traffic and lock-step
engine, and the script on a few synthetic traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchlib.suffix.concurrent import CoreEngine, Job, build_traffic, perturb, run_concurrent
from benchlib.suffix.data import Trace
from benchlib.suffix.drafters import SpecParams
from benchlib.synthetic import synthetic_trace_file

pytest.importorskip("mistral_common")


def _trace(i: int, n: int = 200) -> Trace:
    rng = np.random.default_rng(i)
    return Trace(
        f"t{i}",
        "edit_file",
        rng.integers(0, 50, 20).astype(np.int32),
        rng.integers(0, 50, n).astype(np.int32),
    )


def test_siblings_share_most_of_their_text() -> None:
    resp = np.arange(1000, dtype=np.int32)
    rng = np.random.default_rng(0)
    sib = perturb(resp, rng, 0.02)
    kept = len(set(sib) & set(resp.tolist()))
    assert sib != resp.tolist() and 900 < kept < 1000
    assert perturb(resp, np.random.default_rng(0), 0.02) == sib  # seeded


def test_traffic_groups() -> None:
    traces = [_trace(i) for i in range(5)]
    jobs = build_traffic("samples", traces, n=4)
    assert len(jobs) == 20 and [j.group for j in jobs[:5]] == [0, 0, 0, 0, 1]
    assert jobs[0].response == traces[0].response.tolist()  # sample 0 is the recording
    files = {"t0": "a.py", "t1": "b.py", "t2": "a.py", "t3": "a.py", "t4": "b.py"}
    tools = build_traffic("tools", traces, group=2, files=files)
    assert [(j.req_id, j.group) for j in tools] == [
        ("t0", 0),
        ("t2", 0),
        ("t3", 1),
        ("t1", 2),
        ("t4", 2),
    ]
    with pytest.raises(ValueError, match="unknown traffic"):
        build_traffic("bursty", traces)


def test_lock_step_replay_counts_tokens_and_shares_running_output() -> None:
    # a copies its prompt (fast); b writes the same text from another prompt:
    # with sharing it drafts from a's output at once, without only once a
    # has stopped.
    t = _trace(0, 300)
    text = t.response.tolist()
    jobs = [
        Job("a", t.family, t.response, text, 0),
        Job("b", t.family, t.prompt, text, 0),
    ]
    out = {}
    for share in (False, True):
        engine = CoreEngine(16, 8, SpecParams(), share)
        out[share] = run_concurrent(engine, jobs, slots=2, barrier=False)
        engine.cache.check_integrity()
        assert not engine.cache.active_requests
        assert engine.cache.num_cached_tokens() == 600
        assert out[share]["engine_steps"] >= 300 / 9  # k + 1 tokens a step at most
    assert out[True]["tokens_per_step"] > 1.2 * out[False]["tokens_per_step"]


def test_script_writes_its_table(load_script, tmp_path: Path) -> None:
    traces = synthetic_trace_file(tmp_path, 10)
    out = tmp_path / "out"
    argv = ["--traces", str(traces), "--no-arctic", "--sample-prompts", "3", "--out-dir", str(out)]
    assert load_script("suffix_concurrent").main(argv) == 0
    doc = json.loads((out / "suffix_concurrent.json").read_text())
    rows = [(r["traffic"], r["name"]) for r in doc["results"]]
    assert len(rows) == 8 and rows[1] == ("independent", "this core, sharing on")
    assert all(r["tokens_per_step"] >= 1.0 for r in doc["results"])
    md = (out / "suffix_concurrent.md").read_text()
    assert "| samples-8 | this core, sharing off |" in md
