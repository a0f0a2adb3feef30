"""The replay: recorded requests decoded greedily with speculation and no
model. The recorded response *is* the greedy output, so a draft token is
accepted exactly when it equals the next true response token; a step yields
``accepted + 1`` tokens, capped at the end of the response. All requests go
through one drafter in file order (one global cache: earlier responses stay
cached). Also: per-request head-to-heads between two replays.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchlib.suffix.data import Trace
from benchlib.suffix.drafters import (
    ArcticRef,
    ArcticRefDrafter,
    Drafter,
    NgramDrafter,
    SpecParams,
    SuffixDrafter,
    import_vllm_ngram,
)
from benchlib.tables import fmt
from benchlib.timing import gc_paused, percentile_us


def accepted_prefix(draft: Sequence[int], truth: Sequence[int]) -> int:
    """Length of the longest prefix of ``draft`` equal to ``truth``."""
    n = 0
    for d, t in zip(draft, truth):
        if d != t:
            break
        n += 1
    return n


@dataclass
class FamilyStats:
    tokens: int = 0
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    requests: int = 0

    def add(self, other: FamilyStats) -> None:
        self.tokens += other.tokens
        self.steps += other.steps
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.requests += other.requests

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        d["tokens_per_step"] = self.tokens / self.steps if self.steps else float("nan")
        d["acceptance_rate"] = self.accepted / self.drafted if self.drafted else float("nan")
        return d


@dataclass
class ReplayResult:
    name: str
    families: dict[str, FamilyStats] = field(default_factory=dict)
    accepted_hist: Counter = field(default_factory=Counter)
    request_steps: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def overall(self) -> FamilyStats:
        total = FamilyStats()
        for stats in self.families.values():
            total.add(stats)
        return total


def replay_request(drafter: Drafter, trace: Trace, hist: Counter) -> FamilyStats:
    """Greedy-decode one request with speculation; see the module docstring."""
    prompt_len, resp_len = len(trace.prompt), len(trace.response)
    seq = np.concatenate([trace.prompt, trace.response]).astype(np.int32)
    truth = trace.response.tolist()
    stats = FamilyStats(tokens=resp_len, requests=1)
    drafter.start(trace.id, trace.prompt)
    done = 0
    while done < resp_len:
        draft = drafter.propose(trace.id, seq, prompt_len + done)
        acc = accepted_prefix(draft, truth[done : done + len(draft)])
        advance = min(acc + 1, resp_len - done)
        drafter.commit(trace.id, seq[prompt_len + done : prompt_len + done + advance])
        hist[acc] += 1
        stats.steps += 1
        stats.drafted += len(draft)
        stats.accepted += acc
        done += advance
    drafter.stop(trace.id)
    return stats


def run_replay(drafter: Drafter, traces: Sequence[Trace]) -> ReplayResult:
    """Replay every trace in order through one drafter (one global cache)."""
    result = ReplayResult(drafter.name)
    t0 = time.perf_counter()
    with gc_paused():
        for i, trace in enumerate(traces, 1):
            stats = replay_request(drafter, trace, result.accepted_hist)
            result.families.setdefault(trace.family, FamilyStats()).add(stats)
            result.request_steps[trace.id] = stats.steps
            drafter.after_request(i, len(traces))
    result.seconds = time.perf_counter() - t0
    return result


def replay_summary(result: ReplayResult, drafter: Drafter) -> dict[str, Any]:
    ns = drafter.speculate_ns
    hist = result.accepted_hist
    return {
        "name": result.name,
        "seconds": result.seconds,
        "families": {f: s.to_dict() for f, s in sorted(result.families.items())},
        "all": result.overall().to_dict(),
        "accepted_len_hist": {str(k): hist[k] for k in sorted(hist)},
        "speculate_calls": len(ns),
        "speculate_us": {
            "p50": percentile_us(ns, 50),
            "p90": percentile_us(ns, 90),
            "p99": percentile_us(ns, 99),
            "mean": float(np.mean(ns)) / 1e3 if ns else float("nan"),
        },
        **drafter.summary(),
        "request_steps": result.request_steps,
    }


def replay_suffix(
    traces: Sequence[Trace],
    depth: int,
    k: int,
    params: SpecParams,
    context_len: int | None,
    share: bool = False,
) -> dict[str, Any]:
    """``share``: the cache shares running responses (the response then
    grows in the global tree, so updates cost differently)."""
    snapshot_every = max(1, len(traces) // 4)
    drafter = SuffixDrafter(depth, k, params, context_len or depth, snapshot_every, share)
    summary = replay_summary(run_replay(drafter, traces), drafter)
    print(
        f"[replay] {drafter.name}: {fmt(summary['all']['tokens_per_step'])} tokens/step in {summary['seconds']:.1f} s"
    )
    return summary


def replay_arctic(
    traces: Sequence[Trace],
    ref: ArcticRef,
    depth: int,
    k: int,
    params: SpecParams,
    context_len: int | None,
) -> dict[str, Any]:
    snapshot_every = max(1, len(traces) // 4)
    drafter = ArcticRefDrafter(ref, depth, k, params, context_len or depth, snapshot_every)
    summary = replay_summary(run_replay(drafter, traces), drafter)
    print(
        f"[replay] {drafter.name}: {fmt(summary['all']['tokens_per_step'])} tokens/step in {summary['seconds']:.1f} s"
    )
    return summary


def replay_ngram(traces: Sequence[Trace], k: int) -> dict[str, Any] | None:
    t0 = time.perf_counter()
    fn = import_vllm_ngram()
    if fn is None:
        return None
    drafter = NgramDrafter(fn, k)
    setup = time.perf_counter() - t0
    summary = replay_summary(run_replay(drafter, traces), drafter)
    summary["import_and_jit_seconds"] = setup
    print(
        f"[replay] {drafter.name}: {fmt(summary['all']['tokens_per_step'])} tokens/step in {summary['seconds']:.1f} s"
    )
    return summary


def head_to_head(
    ours: dict[str, Any], peer: dict[str, Any], traces: Sequence[Trace]
) -> dict[str, Any]:
    """Per family: on how many requests each method needs fewer steps, and the
    requests where ``ours`` loses the most steps to ``peer``."""
    out: dict[str, Any] = {}
    for family in sorted({t.family for t in traces}):
        diffs = [
            (ours["request_steps"][t.id] - peer["request_steps"][t.id], t.id)
            for t in traces
            if t.family == family
        ]
        out[family] = {
            "requests": len(diffs),
            "ours_fewer_steps": sum(1 for d, _ in diffs if d < 0),
            "equal": sum(1 for d, _ in diffs if d == 0),
            "ours_more_steps": sum(1 for d, _ in diffs if d > 0),
            "steps_lost_where_worse": sum(d for d, _ in diffs if d > 0),
            "steps_won_where_better": -sum(d for d, _ in diffs if d < 0),
            "worst": [
                {
                    "id": i,
                    "ours_steps": ours["request_steps"][i],
                    "peer_steps": peer["request_steps"][i],
                }
                for d, i in sorted(diffs, reverse=True)[:3]
                if d > 0
            ],
        }
    return {"ours": ours["name"], "peer": peer["name"], "families": out}
