"""bench/suffix_sim.py on a few synthetic traces, and the replay's rules."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from benchlib.suffix.data import Trace
from benchlib.suffix.replay import accepted_prefix, head_to_head, replay_request
from benchlib.synthetic import synthetic_trace_file

pytest.importorskip("mistral_common")


def test_accepted_prefix() -> None:
    assert accepted_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert accepted_prefix([], [1]) == 0
    assert accepted_prefix([1, 2], [1]) == 1


class _Oracle:
    """Drafts the next ``k`` true tokens, so every step accepts ``k``."""

    name = "oracle"

    def __init__(self, k: int) -> None:
        self.k, self.speculate_ns, self.calls = k, [], []

    def start(self, req_id, prompt):
        self.calls.append(("start", req_id))

    def propose(self, req_id, seq, n):
        return seq[n : n + self.k].tolist()

    def commit(self, req_id, tokens):
        self.calls.append(("commit", len(tokens)))

    def stop(self, req_id):
        self.calls.append(("stop", req_id))


def test_replay_request_counts_accepted_plus_one() -> None:
    trace = Trace("r", "edit_file", np.arange(5, dtype=np.int32), np.arange(10, dtype=np.int32))
    oracle, hist = _Oracle(3), Counter()
    stats = replay_request(oracle, trace, hist)
    # 3 accepted + 1 per step: 4, 4, then the last 2 (the draft runs out with the sequence)
    assert (stats.tokens, stats.steps) == (10, 3)
    assert oracle.calls[0] == ("start", "r") and oracle.calls[-1] == ("stop", "r")
    assert [c[1] for c in oracle.calls if c[0] == "commit"] == [4, 4, 2]


def test_head_to_head_counts_per_family() -> None:
    traces = [Trace(i, "edit_file", np.zeros(1, np.int32), np.zeros(1, np.int32)) for i in "abc"]
    ours = {"name": "ours", "request_steps": {"a": 1, "b": 5, "c": 3}}
    peer = {"name": "peer", "request_steps": {"a": 2, "b": 2, "c": 3}}
    fam = head_to_head(ours, peer, traces)["families"]["edit_file"]
    assert (fam["ours_fewer_steps"], fam["equal"], fam["ours_more_steps"]) == (1, 1, 1)
    assert fam["worst"] == [{"id": "b", "ours_steps": 5, "peer_steps": 2}]


def test_suffix_sim_reports_replays_batch_and_targets(load_script, tmp_path: Path) -> None:
    traces = synthetic_trace_file(tmp_path, 12)
    out = tmp_path / "out"
    argv = ["--traces", str(traces), "--extra-depths", "24", "--no-ngram", "--no-arctic"]
    argv += [
        "--batch-sizes",
        "1",
        "4",
        "--batch-steps",
        "3",
        "--threads",
        "1",
        "--out-dir",
        str(out),
    ]
    assert load_script("suffix_sim").main(argv) == 0
    doc = json.loads((out / "suffix_sim.json").read_text())
    main, extra = doc["replays"]
    assert main["name"] == "ours: suffix depth 64, k=32" and extra["name"].startswith(
        "ours: suffix depth 24"
    )
    assert main["all"]["requests"] == 12 and main["all"]["tokens_per_step"] > 1.0
    assert sum(main["request_steps"].values()) == main["all"]["steps"]
    assert [(r["advance"], r["batch_size"]) for r in doc["batch"]] == [
        ("accepted", 1),
        ("accepted", 4),
        ("one", 1),
        ("one", 4),
    ]
    assert all(r["drafts_identical"] for r in doc["batch"])
    assert doc["reference"] and doc["versions"]["arctic_inference_core"]
    md = (out / "suffix_sim.md").read_text()
    for section in ("## Mean tokens per step", "## Costs", "## Batch entry point", "## Targets"):
        assert section in md
    assert md.rstrip().splitlines()[-1].startswith("Versions: ")
    assert list(out.glob("tokens-synthetic-requests-n12-s0-*.npz"))  # the token cache


def test_suffix_sim_refuses_a_missing_trace_file(load_script, tmp_path: Path, capsys) -> None:
    mod = load_script("suffix_sim")
    assert mod.main(["--traces", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
