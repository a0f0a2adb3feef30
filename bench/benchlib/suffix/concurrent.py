"""The concurrent replay: K requests decoding in lock step, as an engine runs
them, each engine step serving every running request at once
(``speculate_batch`` for this core). No model: the recorded response is the
greedy output, so a draft token is accepted exactly when it equals the next
true token, and a request-step yields accepted + 1 tokens.

Traffic (:func:`build_traffic`):

- ``independent``: the agentic traces in file order, K slots refilled as
  requests finish (continuous batching);
- ``samples-n``: n samples of each prompt, started together. Sample 0 is
  the recorded response; each other sample is it with edits where sampling
  at a temperature would diverge: at each token, with probability
  ``edit_rate``, the token is replaced by another token of the response
  (60 %), 1-3 tokens are dropped (20 %) or a token of the response is
  inserted (20 %). Siblings share most of their text, not all;
- ``tools``: parallel tool calls over one repository: the traces grouped by
  the file they edit (all traces come from one repository's history), up to
  ``group`` requests of one file started together; the next group starts
  when the last one finishes (an agent waits for all of its calls).

Drafters: this core with live sharing on or off (:class:`CoreEngine`), and
arctic-inference when importable (:class:`ArcticEngine`: per request
``add_active_response`` + ``speculate``, its cache shares running outputs
natively). Per engine step the cache's work is timed: the drafting call(s)
and the ``start_request``/``stop_request`` calls of requests that start
before it or finish with it (without sharing, stopping inserts the response
into the global tree).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arctic_inference_core.suffix import SuffixDecodingCache
from benchlib.suffix.data import Trace
from benchlib.suffix.drafters import ArcticRef, SpecParams
from benchlib.suffix.replay import accepted_prefix
from benchlib.timing import gc_paused, percentile_us


@dataclass
class Job:
    """One request of the traffic; requests of one group start together."""

    req_id: str
    family: str
    prompt: np.ndarray
    response: list[int]
    group: int


def perturb(response: np.ndarray, rng: np.random.Generator, rate: float) -> list[int]:
    """A sibling sample of ``response`` (see the module docstring)."""
    src = response.tolist()
    out: list[int] = []
    i = 0
    while i < len(src):
        if rng.random() < rate:
            kind = rng.random()
            if kind < 0.6:
                out.append(int(src[rng.integers(len(src))]))
                i += 1
            elif kind < 0.8:
                i += int(rng.integers(1, 4))
            else:
                out.append(int(src[rng.integers(len(src))]))
            continue
        out.append(src[i])
        i += 1
    return out or src[:1]


def edited_file(trace: Trace, prompt_text: dict[str, str]) -> str:
    for line in prompt_text.get(trace.id, "").split("\n")[:6]:
        if line.startswith("File:"):
            return line[5:].strip()
    return trace.id


def build_traffic(
    kind: str,
    traces: Sequence[Trace],
    *,
    n: int = 1,
    edit_rate: float = 0.02,
    group: int = 8,
    files: dict[str, str] | None = None,
    seed: int = 0,
) -> list[Job]:
    """Jobs of one traffic kind, in start order (see the module docstring)."""
    if kind == "independent":
        return [Job(t.id, t.family, t.prompt, t.response.tolist(), i) for i, t in enumerate(traces)]
    if kind == "samples":
        rng = np.random.default_rng(seed)
        jobs = []
        for g, t in enumerate(traces):
            for j in range(n):
                resp = t.response.tolist() if j == 0 else perturb(t.response, rng, edit_rate)
                jobs.append(Job(f"{t.id}#{j}", t.family, t.prompt, resp, g))
        return jobs
    if kind == "tools":
        by_file: dict[str, list[Trace]] = {}
        for t in traces:
            by_file.setdefault((files or {}).get(t.id, t.id), []).append(t)
        jobs, g = [], 0
        for same in by_file.values():
            for a in range(0, len(same), group):
                jobs += [
                    Job(t.id, t.family, t.prompt, t.response.tolist(), g)
                    for t in same[a : a + group]
                ]
                g += 1
        return jobs
    raise ValueError(f"unknown traffic kind {kind!r}")


@dataclass
class Running:
    job: Job
    seq: np.ndarray  # prompt + response (the truth)
    done: int = 0  # response tokens generated
    pending: list[int] = field(default_factory=list)  # to add at the next step
    steps: int = 0


class CoreEngine:
    """This core: one ``speculate_batch`` per engine step."""

    def __init__(self, depth: int, k: int, params: SpecParams, share: bool) -> None:
        self.name = f"this core, sharing {'on' if share else 'off'}"
        self.cache = SuffixDecodingCache(depth, -1, share_active_responses=share)
        self.k, self.params = k, params

    def start(self, r: Running) -> None:
        self.cache.start_request(r.job.req_id, r.job.prompt)

    def step(self, running: Sequence[Running]) -> list[list[int]]:
        batch = self.cache.speculate_batch(
            [r.job.req_id for r in running],
            [r.pending for r in running],
            max_spec_tokens=self.k,
            max_spec_factor=self.params.factor,
            max_spec_offset=self.params.offset,
            min_token_prob=self.params.min_prob,
        )
        return batch.token_id_lists()

    def stop(self, r: Running) -> None:
        if r.pending:
            self.cache.add_active_response(r.job.req_id, r.pending)
        self.cache.stop_request(r.job.req_id)

    def memory(self) -> tuple[int, int]:
        return self.cache.memory_bytes(), self.cache.num_cached_tokens()


class ArcticEngine:
    """arctic-inference's cache: per request add_active_response + speculate
    (its global tree takes running responses token by token)."""

    def __init__(self, ref: ArcticRef, depth: int, k: int, params: SpecParams) -> None:
        self.name = f"arctic-inference {ref.version}"
        self.cache = ref.cache_cls(max_tree_depth=depth, max_cached_requests=-1)
        self.depth, self.k, self.params = depth, k, params
        # It counts no tokens: the replay does (running prompts, all responses).
        self.prompt_tokens = self.response_tokens = 0

    def start(self, r: Running) -> None:
        self.cache.start_request(r.job.req_id, r.job.prompt)
        self.prompt_tokens += len(r.job.prompt)

    def step(self, running: Sequence[Running]) -> list[list[int]]:
        out = []
        for r in running:
            if r.pending:
                self.cache.add_active_response(r.job.req_id, r.pending)
                self.response_tokens += len(r.pending)
            n = len(r.job.prompt) + r.done
            d = self.cache.speculate(
                r.job.req_id,
                r.seq[max(0, n - self.depth) : n],
                max_spec_tokens=self.k,
                max_spec_factor=self.params.factor,
                max_spec_offset=self.params.offset,
                min_token_prob=self.params.min_prob,
            )
            out.append(d.token_ids)
        return out

    def stop(self, r: Running) -> None:
        if r.pending:
            self.cache.add_active_response(r.job.req_id, r.pending)
            self.response_tokens += len(r.pending)
        self.cache.stop_request(r.job.req_id)
        self.prompt_tokens -= len(r.job.prompt)

    def memory(self) -> tuple[int, int]:
        trees = [self.cache._global_tree, *self.cache._local_trees.values()]
        return sum(t.estimate_memory() for t in trees), self.prompt_tokens + self.response_tokens


def run_concurrent(
    engine: CoreEngine | ArcticEngine, jobs: Sequence[Job], slots: int, barrier: bool
) -> dict[str, Any]:
    """Decode ``jobs`` with at most ``slots`` running at once. A group (the
    samples of one prompt, one burst of tool calls) starts whole, once it
    fits; with ``barrier`` only once every running request has finished."""
    queue = deque(jobs)
    running: list[Running] = []
    step_ns: list[int] = []
    batch_sizes: list[int] = []
    fam: dict[str, list[int]] = {}  # family -> [tokens, request-steps]
    peak = (0, 0)
    lifecycle_ns = 0  # start_request calls before a step count in it
    t0 = time.perf_counter()
    with gc_paused():
        while queue or running:
            while queue and not (barrier and running):
                g = queue[0].group
                size = 1
                while size < len(queue) and queue[size].group == g:
                    size += 1
                if running and len(running) + size > slots:
                    break
                for _ in range(size):
                    job = queue.popleft()
                    r = Running(job, np.concatenate([job.prompt, job.response]).astype(np.int32))
                    t = time.perf_counter_ns()
                    engine.start(r)
                    lifecycle_ns += time.perf_counter_ns() - t
                    running.append(r)
            t = time.perf_counter_ns()
            drafts = engine.step(running)
            ns = time.perf_counter_ns() - t + lifecycle_ns
            lifecycle_ns = 0
            batch_sizes.append(len(running))
            still = []
            for r, d in zip(running, drafts):
                truth = r.job.response
                acc = accepted_prefix(d, truth[r.done : r.done + len(d)])
                r.pending = truth[r.done : r.done + acc + 1]
                r.done += len(r.pending)
                r.steps += 1
                if r.done >= len(truth):
                    s = fam.setdefault(r.job.family, [0, 0])
                    s[0] += len(truth)
                    s[1] += r.steps
                    t = time.perf_counter_ns()
                    engine.stop(r)
                    ns += time.perf_counter_ns() - t
                else:
                    still.append(r)
            step_ns.append(ns)
            running = still
            if len(step_ns) % 200 == 0:
                mem = engine.memory()
                peak = max(peak, mem)
    end_mem = engine.memory()
    peak = max(peak, end_mem)
    tokens = sum(v[0] for v in fam.values())
    steps = sum(v[1] for v in fam.values())
    per_req = [ns / b for ns, b in zip(step_ns, batch_sizes)]
    return {
        "name": engine.name,
        "seconds": time.perf_counter() - t0,
        "engine_steps": len(step_ns),
        "mean_batch": float(np.mean(batch_sizes)) if batch_sizes else 0.0,
        "tokens_per_step": tokens / steps if steps else float("nan"),
        "families": {f: v[0] / v[1] for f, v in sorted(fam.items())},
        "step_us": {"p50": percentile_us(step_ns, 50), "p99": percentile_us(step_ns, 99)},
        "request_step_us_p50": percentile_us([int(x) for x in per_req], 50),
        "peak_bytes": peak[0],
        "peak_tokens": peak[1],
        "bytes_per_token": peak[0] / peak[1] if peak[1] else float("nan"),
    }
