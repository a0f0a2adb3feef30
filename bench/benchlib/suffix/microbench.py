"""The batch micro-benchmark: ``speculate_batch`` for a whole engine step
against the loop an engine would otherwise run (per request
``add_active_response`` + ``speculate``), at several batch sizes and thread
counts. Two identically warmed caches serve the same requests; each step
appends to every request either the tokens its previous draft earned
(accepted + 1) or a single token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arctic_inference_core.suffix import SuffixDecodingCache
from benchlib.suffix.data import Trace
from benchlib.suffix.replay import accepted_prefix
from benchlib.timing import gc_paused, percentile_us


@dataclass
class BatchRequest:
    req_id: str
    response: list[int]
    done: int = 0
    accept: bool = True  # advance by accepted draft tokens + 1, else by 1 token
    pending: list[int] = field(default_factory=list)  # tokens to append next step


def warm_cache(cache: SuffixDecodingCache, traces: Sequence[Trace]) -> tuple[int, int]:
    """Put the responses of ``traces`` into the global tree.

    Returns the ns spent in add_active_response (one call per whole response)
    and the tokens it added: the per-token update cost without per-call overhead.
    """
    ns = tokens = 0
    for t in traces:
        cache.start_request(t.id, t.prompt)
        t0 = time.perf_counter_ns()
        cache.add_active_response(t.id, t.response)
        ns += time.perf_counter_ns() - t0
        tokens += len(t.response)
        cache.stop_request(t.id)
    return ns, tokens


def start_batch(
    cache: SuffixDecodingCache, traces: Sequence[Trace], size: int, accept: bool
) -> list[BatchRequest]:
    """Start ``size`` requests on the prompts of ``traces`` (cycled if too few).

    As after prefill, each request's first pending token is its first response token.
    """
    reqs = []
    for i in range(size):
        t = traces[i % len(traces)]
        req = BatchRequest(f"batch-{i}", t.response.tolist(), accept=accept)
        cache.start_request(req.req_id, t.prompt)
        advance_request(req, [])
        reqs.append(req)
    return reqs


def advance_request(req: BatchRequest, draft: Sequence[int]) -> None:
    """Verify ``draft``: next step appends accepted tokens + 1 true token
    (only the 1 true token when ``req.accept`` is off; [] once done)."""
    acc = (
        accepted_prefix(draft, req.response[req.done : req.done + len(draft)]) if req.accept else 0
    )
    req.pending = req.response[req.done : req.done + acc + 1]
    req.done += len(req.pending)


def step_batch(cache: SuffixDecodingCache, reqs: Sequence[BatchRequest], k: int) -> list[list[int]]:
    """One engine step through the batch entry point."""
    drafts = cache.speculate_batch(
        [r.req_id for r in reqs],
        new_token_ids=[r.pending for r in reqs],
        max_spec_tokens=k,
        max_spec_factor=1.0,
        min_token_prob=0.1,
    )
    return drafts.token_id_lists()


def step_loop(cache: SuffixDecodingCache, reqs: Sequence[BatchRequest], k: int) -> list[list[int]]:
    """One engine step as per-request add_active_response + speculate calls."""
    out = []
    for r in reqs:
        if r.pending:
            cache.add_active_response(r.req_id, r.pending)
        d = cache.speculate(
            r.req_id, None, max_spec_tokens=k, max_spec_factor=1.0, min_token_prob=0.1
        )
        out.append(d.token_ids)
    return out


StepFn = Callable[[SuffixDecodingCache, Sequence[BatchRequest], int], list[list[int]]]


@dataclass
class Engine:
    """A warmed cache with ``size`` running requests, stepped by one step function."""

    step: StepFn
    cache: SuffixDecodingCache
    reqs: list[BatchRequest]
    step_ns: list[int] = field(default_factory=list)
    drafts: list[list[list[int]]] = field(default_factory=list)  # per step, per request
    idle_request_steps: int = 0  # request-steps with an exhausted response
    appended_tokens: int = 0
    warm_ns: int = 0
    warm_tokens: int = 0

    def run_step(self, k: int) -> None:
        self.idle_request_steps += sum(1 for r in self.reqs if not r.pending)
        self.appended_tokens += sum(len(r.pending) for r in self.reqs)
        t0 = time.perf_counter_ns()
        drafts = self.step(self.cache, self.reqs, k)
        self.step_ns.append(time.perf_counter_ns() - t0)
        for r, d in zip(self.reqs, drafts):
            advance_request(r, d)
        self.drafts.append(drafts)


def make_engine(
    step: StepFn, traces: Sequence[Trace], size: int, depth: int, accept: bool, threads: int = 1
) -> Engine:
    """Warm a fresh cache with traces[size:], then start size requests on traces[:size]."""
    cache = SuffixDecodingCache(max_tree_depth=depth, max_cached_requests=-1, num_threads=threads)
    with gc_paused():
        warm_ns, warm_tokens = warm_cache(cache, traces[size:])
    reqs = start_batch(cache, traces[:size], size, accept)
    return Engine(step, cache, reqs, warm_ns=warm_ns, warm_tokens=warm_tokens)


def step_stats(step_ns: Sequence[int], size: int) -> dict[str, float]:
    p50_ms, p99_ms = percentile_us(step_ns, 50) / 1e3, percentile_us(step_ns, 99) / 1e3
    return {
        "p50_ms_per_step": p50_ms,
        "p99_ms_per_step": p99_ms,
        "p50_us_per_request": p50_ms * 1e3 / size,
        "p99_us_per_request": p99_ms * 1e3 / size,
    }


def bench_batch(
    traces: Sequence[Trace],
    sizes: Sequence[int],
    advances: Sequence[str],
    depth: int,
    k: int,
    steps: int,
    thread_counts: Sequence[int] = (1,),
) -> list[dict[str, Any]]:
    """speculate_batch (with each thread count) vs. the per-request loop, at each batch size.

    Two identically warmed caches serve the same requests; their steps
    alternate. Each step appends to each request the tokens its previous
    draft earned (advance "accepted") or its next true token (advance "one").
    """
    rows = []
    for advance, size, threads in (
        (a, b, t) for a in advances for b in sizes for t in thread_counts
    ):
        batch = make_engine(step_batch, traces, size, depth, advance == "accepted", threads)
        loop = make_engine(step_loop, traces, size, depth, advance == "accepted")
        with gc_paused():
            for _ in range(steps):  # alternate, so drift hits both alike
                batch.run_step(k)
                loop.run_step(k)
        warm_ns, warm_tokens = batch.warm_ns + loop.warm_ns, batch.warm_tokens + loop.warm_tokens
        rows.append(
            {
                "batch_size": size,
                "threads": threads,
                "advance": advance,
                "steps": steps,
                "mean_new_tokens": batch.appended_tokens / (size * steps),
                "warm_requests": max(0, len(traces) - size),
                "bulk_add_us_per_token": warm_ns / 1e3 / warm_tokens
                if warm_tokens
                else float("nan"),
                "idle_request_step_fraction": batch.idle_request_steps / (size * steps),
                "drafts_identical": batch.drafts == loop.drafts,
                "mean_draft_len": float(np.mean([len(d) for s in batch.drafts for d in s])),
                "speculate_batch": step_stats(batch.step_ns, size),
                "loop": step_stats(loop.step_ns, size),
            }
        )
        print(
            f"[batch] advance={advance} B={size} threads={threads}: speculate_batch p50 {rows[-1]['speculate_batch']['p50_ms_per_step']:.3f} ms/step, "
            f"loop p50 {rows[-1]['loop']['p50_ms_per_step']:.3f} ms/step"
        )
    return rows
