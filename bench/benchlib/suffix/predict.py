"""Predict a served run's output tokens/s from a measured cost curve, without
a model.

The traces are what the engine serves: per concurrency level, requests
(prompt token ids and the model's greedy output ids), sent the way
``bench/vllm_compare.py`` sends them (:class:`Level`: a steady
concurrency, or waves), every running request advancing in lockstep. The cost file says
what the engine's steps cost on the machine (:class:`CostFile`):

- ``prefill``: a batch's prompt processing (and first token), against its
  prompt tokens;
- ``none``: a decode step without speculation, against running requests;
- ``shapes``: a speculative step, per step shape, against scheduled tokens
  (the draft policy's learned curve, ``suffix/step_cost.py``'s format), and
  optionally ``levels``: such a curve per concurrency level (the cost of a
  draft token depends on the batch: the policy's curve is a local fit).

Each drafter then replays the traces: per step it drafts from everything
generated so far, the drafts it verifies are accepted up to the first token
that differs from the recorded output, and the step costs what the curve
says for its size and shape. This core's suffix decoding runs its real draft
policy (suffix/draft_policy.py) on the simulated clock; vLLM's suffix
proposer over arctic-inference verifies every draft whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arctic_inference_core.suffix import SuffixDecodingCache
from arctic_inference_vllm.suffix.draft_policy import Candidates, DraftPolicy
from arctic_inference_vllm.suffix.step_cost import StepCostModel, step_shape
from benchlib.engine import LOADS
from benchlib.suffix.drafters import ArcticRef, SpecParams


@dataclass
class Request:
    prompt: list[int]
    output: list[int]


@dataclass
class Level:
    """One concurrency level: its requests in the order they were sent, and
    how (``load``): ``steady`` keeps ``concurrency`` requests running, a new
    one joining as soon as one finishes (what ``vllm bench serve
    --max-concurrency`` does); ``waves`` sends ``concurrency`` at a time and
    waits for the whole wave (its slowest request) before the next."""

    concurrency: int
    requests: list[Request]
    load: str = "steady"

    def __post_init__(self) -> None:
        if self.load not in LOADS:
            raise ValueError(f"unknown load {self.load!r}; known: {', '.join(LOADS)}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    def admit(self, pending: int, running: int) -> int:
        """How many pending requests join now, with ``running`` in flight."""
        if self.load == "steady":
            return min(pending, self.concurrency - running)
        return min(pending, self.concurrency) if running == 0 else 0


@dataclass
class CostFile:
    spec: StepCostModel
    none_rows: list[int]
    none_ms: list[float]
    prefill_tokens: list[int]
    prefill_ms: list[float]
    graph_mode: str = "NONE"
    graph_size: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    levels: dict[int, StepCostModel] = field(default_factory=dict)

    def spec_for(self, concurrency: int) -> StepCostModel:
        """The curve measured at this concurrency, else the nearest one, else ``spec``."""
        if not self.levels:
            return self.spec
        return self.levels[min(self.levels, key=lambda c: (abs(c - concurrency), c))]

    def none_seconds(self, rows: int) -> float:
        if not self.none_rows:
            raise ValueError("the cost file has no 'none' decode step costs")
        return float(np.interp(rows, self.none_rows, self.none_ms)) / 1e3

    def prefill_seconds(self, tokens: int) -> float:
        """The measured batch of these prompt tokens (the same batch: its
        prompts share prefixes with earlier ones as they did in the run),
        else linear in prompt tokens, fit to the measured batches."""
        for t, ms in zip(self.prefill_tokens, self.prefill_ms):
            if t == tokens:
                return ms / 1e3
        xs, ys = np.asarray(self.prefill_tokens, float), np.asarray(self.prefill_ms, float)
        if len(xs) == 0:
            return 0.0
        if len(xs) == 1 or np.ptp(xs) == 0:
            return float(ys.mean() * tokens / max(xs.mean(), 1.0)) / 1e3
        slope, icpt = np.polyfit(xs, ys, 1)
        return max(float(slope * tokens + icpt), 0.0) / 1e3

    def to_json(self) -> dict[str, Any]:
        out = self.spec.snapshot()
        out["none"] = {"rows": self.none_rows, "ms": self.none_ms}
        out["prefill"] = {"tokens": self.prefill_tokens, "ms": self.prefill_ms}
        out["graphs"] = {"mode": self.graph_mode, "size": self.graph_size}
        out["levels"] = {str(c): m.snapshot() for c, m in sorted(self.levels.items())}
        out["meta"] = self.meta
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CostFile:
        try:
            none, prefill = data.get("none", {}), data.get("prefill", {})
            graphs = data.get("graphs", {})
            return cls(
                StepCostModel.from_snapshot(data),
                [int(r) for r in none.get("rows", [])],
                [float(v) for v in none.get("ms", [])],
                [int(t) for t in prefill.get("tokens", [])],
                [float(v) for v in prefill.get("ms", [])],
                str(graphs.get("mode", "NONE")),
                int(graphs.get("size", 0)),
                dict(data.get("meta", {})),
                {int(c): StepCostModel.from_snapshot(v) for c, v in data.get("levels", {}).items()},
            )
        except (AttributeError, TypeError) as e:
            raise ValueError(f"not a cost file: {e}") from e

    @classmethod
    def load(cls, path: str | Path) -> CostFile:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read cost file {path}: {e}") from e


def _graphs(costs: CostFile) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        cudagraph_mode=SimpleNamespace(name=costs.graph_mode),
        max_cudagraph_capture_size=costs.graph_size,
    )


def _accepted(draft: Sequence[int], truth: Sequence[int]) -> int:
    n = 0
    for a, b in zip(draft, truth):
        if a != b:
            break
        n += 1
    return n


@dataclass
class Outcome:
    seconds: float = 0.0
    tokens: int = 0
    steps: int = 0
    drafts: int = 0  # request-steps that verified a draft
    accepted: int = 0
    draft_tokens: int = 0

    def row(self, drafter: str, concurrency: int) -> dict[str, Any]:
        return {
            "drafter": drafter,
            "concurrency": concurrency,
            "tokens_per_s": self.tokens / self.seconds if self.seconds else float("nan"),
            "seconds": self.seconds,
            "tokens": self.tokens,
            "steps": self.steps,
            "mean_tokens_per_step": 1 + self.accepted / self.drafts if self.drafts else 1.0,
            "draft_tokens": self.draft_tokens,
        }


def predict_none(level: Level, costs: CostFile) -> Outcome:
    """Joining requests' prefill (their first token), then one decode step
    per token for everything running."""
    out = Outcome()
    queue = list(level.requests)
    left: list[int] = []  # tokens each running request still has to decode
    while queue or left:
        n = level.admit(len(queue), len(left))
        if n:
            joining, queue = queue[:n], queue[n:]
            out.seconds += costs.prefill_seconds(sum(len(r.prompt) for r in joining))
            out.tokens += sum(len(r.output) for r in joining)
            left = [x for x in left + [len(r.output) - 1 for r in joining] if x > 0]
            continue
        out.seconds += costs.none_seconds(len(left))
        out.steps += 1
        left = [x - 1 for x in left if x > 1]
    return out


class _OurDrafts:
    """This core's suffix cache and draft policy, as the adapter runs them."""

    def __init__(self, costs: CostFile, k: int, depth: int, params: SpecParams, budget: int | None):
        self.cache = SuffixDecodingCache(max_tree_depth=depth, max_cached_requests=100000)
        self.clock = [0.0]
        self.policy = DraftPolicy(
            k,
            _graphs(costs),
            step_token_budget=budget,
            cost=StepCostModel.from_snapshot(costs.spec.snapshot()),
            clock=lambda: self.clock[0],
        )
        self.costs = costs
        self.truth = costs.spec  # what steps really cost: the level's curve
        self.k, self.params = k, params

    def level(self, concurrency: int) -> None:
        self.truth = self.costs.spec_for(concurrency)
        self.policy.cost = StepCostModel.from_snapshot(self.truth.snapshot())

    def start(self, rid: str, prompt: list[int]) -> None:
        self.cache.start_request(rid, np.asarray(prompt, dtype=np.int32))

    def draft(
        self, rids: list[str], new: list[list[int]], sampled: list[tuple[str, int]], prefill: bool
    ) -> list[list[int]]:
        self.policy.start_step(sampled, prefill)
        batch = self.cache.speculate_batch(
            rids,
            new,
            max_spec_tokens=self.k,
            max_spec_factor=self.params.factor,
            min_token_prob=self.params.min_prob,
        )
        lists = batch.token_id_lists()
        ml = np.asarray(batch.match_lens, dtype=np.int64)
        cands = Candidates(list(rids), batch.probs, batch.offsets, ["suffix"] * len(rids), ml)
        uniform, padded = None, None
        if self.policy.uniform_fits(len(rids), len(rids), self.k):
            padded, probs = [], []
            for rid, d, p in zip(rids, lists, np.split(batch.probs, batch.offsets[1:-1])):
                longer = self.cache.speculate(
                    rid,
                    None,
                    max_spec_tokens=self.k,
                    max_spec_factor=float(self.k),
                    min_token_prob=0.0,
                )
                ids = list(longer.token_ids)
                if ids[: len(d)] == d and len(ids) > len(d):
                    p = np.concatenate([p, np.asarray(longer.probs)[len(d) : self.k]])
                    d = ids[: self.k]
                fill = self.k - len(d)
                padded.append(d + [d[-1] if d else new[len(padded)][-1]] * fill)
                probs.append(np.concatenate([p, np.zeros(fill)]))
            uniform = Candidates(
                list(rids),
                np.concatenate(probs),
                np.arange(len(rids) + 1, dtype=np.int64) * self.k,
                ["suffix"] * len(rids),
                ml,
            )
        plan = self.policy.plan(cands, len(rids), uniform)
        if plan.uniform and padded is not None and uniform is not None:
            out = padded
            self.policy.record(uniform, [len(d) for d in out])
        else:
            out = [d[:m] for d, m in zip(lists, plan.lengths)]
            self.policy.record(cands, [len(d) for d in out])
        return out

    def step_seconds(self, rows: int, drafts: list[list[int]]) -> float:
        tokens = rows + sum(len(d) for d in drafts)
        mode, graph = self.policy.graph()
        uniform = self.k > 0 and all(len(d) == self.k for d in drafts)
        return float(self.truth.cost(step_shape(mode, graph, tokens, uniform), tokens))

    def stop(self, rid: str) -> None:
        self.cache.stop_request(rid)
        self.policy.forget(rid)


class _ReferenceDrafts:
    """vLLM's stock suffix proposer over arctic-inference: a loop over the
    batch, every draft verified whole."""

    def __init__(self, ref: ArcticRef, costs: CostFile, k: int, depth: int, params: SpecParams):
        self.cache = ref.cache_cls(max_tree_depth=depth, max_cached_requests=100000)
        self.costs, self.k, self.depth, self.params = costs, k, depth, params
        self.truth = costs.spec
        self.seq: dict[str, list[int]] = {}
        self.clock = [0.0]

    def start(self, rid: str, prompt: list[int]) -> None:
        self.cache.start_request(rid, np.asarray(prompt, dtype=np.int32))
        self.seq[rid] = list(prompt)

    def draft(
        self, rids: list[str], new: list[list[int]], sampled: list[tuple[str, int]], prefill: bool
    ) -> list[list[int]]:
        out = []
        for rid, toks in zip(rids, new):
            self.cache.add_active_response(rid, list(toks))
            self.seq[rid] += toks
            ctx = np.asarray(self.seq[rid][-self.depth :], dtype=np.int32)
            d = self.cache.speculate(
                rid,
                ctx,
                max_spec_tokens=self.k,
                max_spec_factor=self.params.factor,
                min_token_prob=self.params.min_prob,
            )
            out.append(list(d.token_ids))
        return out

    def step_seconds(self, rows: int, drafts: list[list[int]]) -> float:
        tokens = rows + sum(len(d) for d in drafts)
        uniform = self.k > 0 and all(len(d) == self.k for d in drafts)
        shape = step_shape(self.costs.graph_mode, self.costs.graph_size, tokens, uniform)
        return float(self.truth.cost(shape, tokens))

    def level(self, concurrency: int) -> None:
        self.truth = self.costs.spec_for(concurrency)

    def stop(self, rid: str) -> None:
        self.cache.stop_request(rid)
        self.seq.pop(rid, None)


def predict_drafter(level: Level, costs: CostFile, drafter: Any, tag: str) -> Outcome:
    """Replay ``level`` with ``drafter`` (continuing its cache across levels)."""
    out = Outcome()
    drafter.level(level.concurrency)
    queue = list(enumerate(level.requests))
    truth: dict[str, list[int]] = {}
    pos: dict[str, int] = {}
    new: dict[str, list[int]] = {}
    active: list[str] = []
    sampled: list[tuple[str, int]] = []
    prefill = False
    while queue or active:
        n = level.admit(len(queue), len(active))
        if n:
            joining, queue = queue[:n], queue[n:]
            out.seconds += costs.prefill_seconds(sum(len(r.prompt) for _, r in joining))
            prefill = True
            for i, r in joining:
                rid = f"{tag}-c{level.concurrency}-r{i}"
                drafter.start(rid, r.prompt)
                truth[rid], pos[rid], new[rid] = r.output, 1, r.output[:1]
                out.tokens += len(r.output)
                if len(r.output) > 1:  # the prefill step sampled the first token
                    active.append(rid)
                else:
                    drafter.stop(rid)
            if not active:
                continue
        drafts = drafter.draft(active, [new[r] for r in active], sampled, prefill)
        prefill = False
        dt = drafter.step_seconds(len(active), drafts)
        out.seconds += dt
        drafter.clock[0] += dt
        out.steps += 1
        sampled = []
        still = []
        for rid, d in zip(active, drafts):
            t = truth[rid]
            acc = _accepted(d, t[pos[rid] :])
            gained = min(acc + 1, len(t) - pos[rid])
            if d:
                out.drafts += 1
                out.draft_tokens += len(d)
                out.accepted += min(acc, gained)
            new[rid] = t[pos[rid] : pos[rid] + gained]
            pos[rid] += gained
            sampled.append((rid, gained))
            if pos[rid] < len(t):
                still.append(rid)
            else:
                drafter.stop(rid)
        active = still
    return out


def predict(
    levels: Sequence[Level],
    costs: CostFile,
    k: int,
    depth: int,
    params: SpecParams | None = None,
    ref: ArcticRef | None = None,
    budget: int | None = None,
) -> list[dict[str, Any]]:
    """Predicted output tokens/s per drafter and level: ``none``, ``suffix``
    (this core with its draft policy) and, with ``ref``, ``suffix-ai``."""
    rows = []
    params = params or SpecParams()
    ours = _OurDrafts(costs, k, depth, params, budget)
    theirs = None if ref is None else _ReferenceDrafts(ref, costs, k, depth, params)
    for level in levels:
        rows.append(predict_none(level, costs).row("none", level.concurrency))
        rows.append(predict_drafter(level, costs, ours, "ours").row("suffix", level.concurrency))
        if theirs is not None:
            res = predict_drafter(level, costs, theirs, "ref")
            rows.append(res.row("suffix-ai", level.concurrency))
    return rows
