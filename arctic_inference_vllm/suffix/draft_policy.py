"""Cost-aware drafting: each step, the drafts that maximize expected output
tokens per second.

A step that verifies drafts yields, per request, 1 token plus the accepted
drafts, and costs the time of a step of its size and shape. The policy
knows both: expected acceptance per draft token (acceptance.py) and the
cost of a step per shape and size, learned from the engine's own step times
(step_cost.py). Each step it compares

- no drafts at all (a plain decode step),
- the ``D`` most valuable draft tokens, for every ``D`` up to all of them
  (always prefixes of the drafts: values never rise along a draft),
- every draft padded to exactly ``num_speculative_tokens`` (a uniform step,
  which vLLM runs as one full CUDA graph when it fits the largest one),

and takes the one with the most expected tokens (running requests + accepted
drafts) per estimated second. Steps never exceed the largest CUDA graph
(a larger one runs without graphs), nor the scheduler's token budget.

Step times are the wall time between two calls of the proposer: one engine
cycle (scheduling, the forward pass, sampling, bookkeeping, drafting). A
cycle that contained a prefill is not a decode step's cost and is not
learned from. Every ``explore_every`` steps, one of the candidates above
whose size has not been measured for ``stale_after`` steps is run instead,
so the curve follows the machine's load and the requests' lengths.

A user's explicit ``suffix_step_token_budget`` replaces all this with a
fixed cap: the most valuable drafts that fit it, padded to a uniform step
when that fits too (no cost model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from arctic_inference_vllm.suffix.acceptance import AcceptanceModel, check_source, flat_drafts
from arctic_inference_vllm.suffix.step_cost import (
    FULL_DECODE_MODES,
    StepCostModel,
    graph_mode_name,
    graph_step_shape,
    largest_graph,
    step_shape,
)

DEFAULT_STEP_CAP = 512  # most tokens per step without CUDA graphs or a scheduler budget


@dataclass
class Candidates:
    """Per request, the longest draft the step may verify.

    ``probs`` holds each draft token's estimated probability, flat and split
    by ``offsets`` (one more entry than requests); ``sources`` names each
    request's drafter (see acceptance.SOURCES); ``match_lens`` the context
    tokens each suffix draft matched.
    """

    req_ids: list[Hashable]
    probs: npt.NDArray[np.float64]
    offsets: npt.NDArray[np.int64]
    sources: list[str]
    match_lens: npt.NDArray[np.int64] | None = None  # per request; -1 or None: unknown

    def __post_init__(self) -> None:
        n = len(self.req_ids)
        self.probs, self.offsets = flat_drafts(self.probs, self.offsets, n)
        ml = np.full(n, -1) if self.match_lens is None else self.match_lens
        self.match_lens = np.asarray(ml, dtype=np.int64).reshape(-1)
        if len(self.match_lens) != n:
            raise ValueError(f"{len(self.match_lens)} match lengths for {n} requests")
        if len(self.sources) != n:
            raise ValueError(f"{len(self.sources)} sources for {n} requests")
        for source in set(self.sources):
            check_source(source)

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        return np.diff(self.offsets)

    def probs_of(self, i: int, n: int) -> npt.NDArray[np.float64]:
        start = int(self.offsets[i])
        return self.probs[start : start + n]


@dataclass
class Plan:
    """The policy's choice: per request (as in the candidates), the number of
    draft tokens to verify; ``uniform``: the padded candidates instead."""

    lengths: list[int]
    uniform: bool
    kind: str  # none | drafts | uniform | explore
    tokens: int  # scheduled tokens of the step
    expected_tokens: float  # output tokens expected from it
    seconds: float  # its estimated cost


@dataclass
class PolicyStats:
    """What the policy did (for diagnostics and the benchmarks)."""

    steps: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    observed: int = 0
    dropped: int = 0


class DraftPolicy:
    """See the module doc.

    Args:
        num_speculative_tokens: vLLM's k (most drafts per request).
        compilation_config: vLLM's (read every step: vLLM settles its graph
            sizes after the proposer is built).
        step_token_budget: a user's fixed budget (None: cost-aware).
        max_step_tokens: the scheduler's token budget, if known.
        cost: a cost model to start from (a measured curve), else empty.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        num_speculative_tokens: int,
        compilation_config: Any = None,
        step_token_budget: int | None = None,
        max_step_tokens: int | None = None,
        cost: StepCostModel | None = None,
        acceptance: AcceptanceModel | None = None,
        clock: Callable[[], float] = time.perf_counter,
        explore_every: int = 32,
        stale_after: int = 256,
    ) -> None:
        for name, v in (("num_speculative_tokens", num_speculative_tokens),):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if step_token_budget is not None and (
            isinstance(step_token_budget, bool)
            or not isinstance(step_token_budget, int)
            or step_token_budget < 0
        ):
            raise ValueError(
                f"step_token_budget must be an integer >= 0, got {step_token_budget!r}"
            )
        if max_step_tokens is not None and (
            not isinstance(max_step_tokens, int) or max_step_tokens < 1
        ):
            raise ValueError(f"max_step_tokens must be an integer >= 1, got {max_step_tokens!r}")
        if explore_every < 1 or stale_after < 1:
            raise ValueError("explore_every and stale_after must be >= 1")
        self.k = num_speculative_tokens
        self.compilation_config = compilation_config
        self.fixed_budget = step_token_budget
        self.max_step_tokens = max_step_tokens
        self.cost = cost if cost is not None else StepCostModel()
        self.acceptance = acceptance if acceptance is not None else AcceptanceModel()
        self.clock = clock
        self.explore_every = explore_every
        self.stale_after = stale_after
        self.stats = PolicyStats()
        self._last_time: float | None = None
        # what the previous call returned: req_id -> (source, draft probs, match length)
        self._pending: dict[Hashable, tuple[str, npt.NDArray[np.float64], int]] = {}

    # ------------------------------------------------------------ graphs

    def graph(self) -> tuple[str, int]:
        """(cudagraph mode name, largest graph's tokens) as vLLM runs them now."""
        cc = self.compilation_config
        return graph_mode_name(cc), largest_graph(cc)

    def step_cap(self) -> int:
        """Most tokens one step may schedule."""
        if self.fixed_budget is not None:
            return self.fixed_budget
        mode, graph = self.graph()
        cap = graph if graph > 0 else (self.max_step_tokens or DEFAULT_STEP_CAP)
        return min(cap, self.max_step_tokens) if self.max_step_tokens else cap

    def uniform_fits(self, num_rows: int, num_drafting: int, min_room: int) -> bool:
        """Whether padding every draft to k tokens makes a full-graph step:
        every request drafts, each has room for k tokens, and ``num_rows *
        (k + 1)`` tokens fit the largest graph and the cap."""
        mode, graph = self.graph()
        if mode not in (*FULL_DECODE_MODES, "FULL") or self.k <= 0:
            return False
        size = num_rows * (self.k + 1)
        return (
            num_drafting == num_rows > 0
            and min_room >= self.k
            and size <= graph
            and size <= self.step_cap()
        )

    # ------------------------------------------------------------ learning

    def start_step(self, rows: Sequence[tuple[Hashable, int]], had_prefill: bool) -> None:
        """Called first thing in each ``propose``: ``rows`` are the requests
        that sampled tokens in the step that just ran, with how many;
        ``had_prefill`` whether it also ran prompt tokens (a new request or a
        chunk of one). Learns the step's cost and each draft's acceptance."""
        now = self.clock()
        pending, self._pending = self._pending, {}
        if self._last_time is not None and rows and not had_prefill:
            lengths = [len(pending[r][1]) if r in pending else 0 for r, _ in rows]
            tokens = len(rows) + sum(lengths)
            uniform = self.k > 0 and all(n == self.k for n in lengths)
            mode, graph = self.graph()
            shape = step_shape(mode, graph, tokens, uniform)
            if self.cost.observe(shape, tokens, max(now - self._last_time, 1e-9)):
                self.stats.observed += 1
            else:
                self.stats.dropped += 1
        self._last_time = now
        by_source: dict[str, tuple[list[Any], ...]] = {}
        for r, n_sampled in rows:
            if r in pending:
                source, probs, ml = pending[r]
                ids, ps, acc, mls = by_source.setdefault(source, ([], [], [], []))
                ids.append(r)
                ps.append(probs)
                acc.append(min(max(n_sampled - 1, 0), len(probs)))
                mls.append(ml)
        for source, (ids, ps, acc, mls) in by_source.items():
            offsets = np.concatenate(([0], np.cumsum([len(p) for p in ps]))).astype(np.int64)
            flat = np.concatenate(ps) if ps else np.zeros(0)
            self.acceptance.observe_unchecked(
                ids, flat, offsets, np.asarray(acc, dtype=np.int64), source, np.asarray(mls)
            )

    def record(self, cands: Candidates, lengths: Sequence[int]) -> None:
        """What this call returned: the first ``lengths[i]`` tokens of each
        candidate draft (padded tokens beyond a candidate count with
        probability 0)."""
        for i, (r, n) in enumerate(zip(cands.req_ids, lengths)):
            p = cands.probs_of(i, int(n))
            if len(p) < n:
                p = np.concatenate([p, np.zeros(int(n) - len(p))])
            assert cands.match_lens is not None
            self._pending[r] = (cands.sources[i], p, int(cands.match_lens[i]))

    def forget(self, req_id: Hashable) -> None:
        self.acceptance.forget(req_id)
        self._pending.pop(req_id, None)

    # ------------------------------------------------------------ choosing

    def plan(self, cands: Candidates, num_rows: int, uniform: Candidates | None = None) -> Plan:
        """The drafts for the next step. ``num_rows``: requests in it (those
        with candidates and the others); ``uniform``: the candidates padded
        to exactly k tokens each, when :meth:`uniform_fits`."""
        if num_rows < len(cands.req_ids):
            raise ValueError(f"num_rows={num_rows} < {len(cands.req_ids)} candidate requests")
        if uniform is not None and (
            len(uniform.req_ids) != num_rows or np.any(uniform.lengths != self.k)
        ):
            raise ValueError(f"uniform candidates must give all {num_rows} requests k={self.k}")
        self.stats.steps += 1
        mode, graph = self.graph()
        fixed = self.fixed_budget is not None
        values = self._values(cands)
        # the D most valuable tokens, for every D (ties: earlier position first)
        order = np.lexsort((np.arange(len(values)), -values))
        gain = np.concatenate(([0.0], np.cumsum(values[order])))
        d_max = min(len(values), max(self.step_cap() - num_rows, 0))
        tokens = num_rows + np.arange(d_max + 1)
        seconds = np.ones(d_max + 1) if fixed else self._cost(mode, graph, tokens, uniform=False)
        rate = (num_rows + gain[: d_max + 1]) / seconds
        d = int(d_max - np.argmax(rate[::-1]))  # ties: the longer drafts
        kind, best = ("drafts" if d else "none"), float(rate[d])

        size = num_rows * (self.k + 1)
        uni_gain, uni_seconds = 0.0, 1.0
        if uniform is not None:
            if not fixed:
                uni_seconds = float(self._cost(mode, graph, np.array([size]), True)[0])
            uni_gain = float(self._values(uniform).sum())
            if (num_rows + uni_gain) / uni_seconds >= best:
                kind = "uniform"

        explored = False
        if not fixed and self.stats.steps % self.explore_every == 0:
            kind, d, explored = self._explore(mode, graph, kind, d, d_max, num_rows, uniform)
        self.stats.kinds[kind] = self.stats.kinds.get(kind, 0) + 1
        if explored:
            self.stats.kinds["explore"] = self.stats.kinds.get("explore", 0) + 1
        if kind == "uniform":
            return Plan([self.k] * num_rows, True, kind, size, num_rows + uni_gain, uni_seconds)
        keep = np.zeros(len(values), dtype=bool)
        keep[order[:d]] = True
        csum = np.concatenate(([0], np.cumsum(keep)))
        kept = (csum[cands.offsets[1:]] - csum[cands.offsets[:-1]]).astype(int)
        return Plan(
            kept.tolist(), False, kind, num_rows + d, num_rows + float(gain[d]), float(seconds[d])
        )

    def _values(self, cands: Candidates) -> npt.NDArray[np.float64]:
        sources = set(cands.sources)
        if len(sources) == 1:  # the common case: one drafter
            assert cands.match_lens is not None
            return self.acceptance.values_unchecked(
                cands.req_ids, cands.probs, cands.offsets, sources.pop(), cands.match_lens
            )
        out = np.zeros(len(cands.probs))
        lengths = cands.lengths
        for source in sorted(sources):
            rows = [i for i, s in enumerate(cands.sources) if s == source]
            idx = np.concatenate(
                [np.arange(cands.offsets[i], cands.offsets[i + 1]) for i in rows]
            ).astype(np.int64)
            if len(idx) == 0:
                continue
            sub_off = np.concatenate(([0], np.cumsum(lengths[rows]))).astype(np.int64)
            assert cands.match_lens is not None
            out[idx] = self.acceptance.values_unchecked(
                [cands.req_ids[i] for i in rows],
                cands.probs[idx],
                sub_off,
                source,
                cands.match_lens[rows],
            )
        return out

    def _cost(
        self, mode: str, graph: int, tokens: npt.NDArray[np.int64], uniform: bool
    ) -> npt.NDArray[np.float64]:
        small = graph_step_shape(mode, graph, uniform)
        above = tokens > graph
        if not above.any():
            out = self.cost.cost(small, tokens)
        elif small == "eager" or above.all():
            out = self.cost.cost("eager", tokens)
        else:
            out = np.empty(len(tokens))
            out[~above] = self.cost.cost(small, tokens[~above])
            out[above] = self.cost.cost("eager", tokens[above])
        return np.maximum(out, 1e-12)

    def _explore(
        self,
        mode: str,
        graph: int,
        kind: str,
        d: int,
        d_max: int,
        rows: int,
        uniform: Candidates | None,
    ) -> tuple[str, int, bool]:
        """Swap the choice for a candidate whose cost was not measured lately:
        no drafts, all drafts, or the uniform step."""
        options = [("none", 0), ("drafts", d_max)]
        if uniform is not None:
            options.append(("uniform", rows * self.k))
        for new_kind, new_d in options:
            if (new_kind == "uniform") == (kind == "uniform") and new_d == d:
                continue
            uni = new_kind == "uniform"
            if self.cost.stale(
                step_shape(mode, graph, rows + new_d, uni), rows + new_d, self.stale_after
            ):
                return (new_kind if new_d or uni else "none"), new_d, True
        return kind, d, False

    def snapshot(self) -> dict[str, Any]:
        """Learned costs and what the policy chose (JSON-able)."""
        return {
            "cost": self.cost.snapshot(),
            "steps": self.stats.steps,
            "kinds": dict(self.stats.kinds),
            "observed_steps": self.stats.observed,
            "dropped_steps": self.stats.dropped,
        }
