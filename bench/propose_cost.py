"""What the vLLM adapter's suffix proposer costs per engine step, without
an engine: ``ArcticSuffixDecodingProposer.propose`` (the native drafting,
the draft policy's learning and choice, the padding) driven in lock step
over recorded agentic traces.

    python bench/propose_cost.py --concurrency 1 16 64
    python bench/propose_cost.py --concurrency 16 --profile   # where it goes

Each step serves C running requests (a new trace joins as one finishes, as
under steady load): every request receives the tokens its previous draft
earned (the accepted prefix of the draft against the recorded response,
plus one), exactly what vLLM hands the proposer, and the proposer drafts
again. The policy's clock advances by a modeled step cost (``--step-ms``
plus ``--token-ms`` per scheduled token, full CUDA graphs up to
``--graph`` tokens), so its choices are those it makes on a GPU with that
cost line, while the timings are this CPU's. Reported per concurrency: the
proposer's wall time per step (median, mean, p90), per request-step, and
tokens per request-step. Results: ``<out-dir>/propose_cost.{md,json}``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see suffix_sim.py

import numpy as np  # noqa: E402
from benchlib.paths import AGENTIC_TRACES, RESULTS  # noqa: E402
from benchlib.stamps import stamped_markdown, version_stamp, write_results  # noqa: E402
from benchlib.suffix.data import Trace, find_tekken_file, load_traces  # noqa: E402
from benchlib.suffix.replay import accepted_prefix  # noqa: E402
from benchlib.tables import table  # noqa: E402
from benchlib.timing import gc_paused, percentile_us  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--traces", type=Path, default=AGENTIC_TRACES)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--steps", type=int, default=1500, help="timed steps per concurrency")
    p.add_argument("--warmup", type=int, default=200, help="untimed steps first")
    p.add_argument("--k", type=int, default=32, help="num_speculative_tokens")
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--graph", type=int, default=512, help="largest full CUDA graph (tokens)")
    p.add_argument("--step-ms", type=float, default=7.0, help="modeled step cost at 0 tokens")
    p.add_argument("--token-ms", type=float, default=0.03, help="modeled cost per token")
    p.add_argument("--max-prompt", type=int, default=4096, help="prompt tokens kept (the last)")
    p.add_argument("--threads", type=int, default=1, help="suffix_num_threads (adapter setting)")
    p.add_argument(
        "--no-share",
        dest="share",
        action="store_false",
        help="suffix_share_active_responses off (adapter setting; default on)",
    )
    p.add_argument("--profile", action="store_true", help="print a cProfile of the timed steps")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if not a.traces.is_file():
        p.error(f"trace file {a.traces} not found (JSON lines: id, family, prompt, response)")
    if min(a.concurrency) < 1 or a.steps < 1 or a.k < 1:
        p.error("--concurrency, --steps and --k must be >= 1")
    return a


class FakeBatch:
    """The parts of vLLM's ``InputBatch`` the proposer reads."""

    def __init__(self, width: int) -> None:
        self.req_ids: list[str] = []
        self.req_id_to_index: dict[str, int] = {}
        self.num_tokens_no_spec = np.zeros(0, dtype=np.int64)
        self.token_ids_cpu = np.zeros((0, width), dtype=np.int64)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_proposer(a: argparse.Namespace, max_model_len: int) -> Any:
    from vllm.config import CUDAGraphMode

    from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer

    spec = SimpleNamespace(
        num_speculative_tokens=a.k,
        suffix_decoding_max_tree_depth=a.depth,
        suffix_decoding_max_spec_factor=1.0,
        suffix_decoding_min_token_prob=0.1,
        suffix_decoding_max_cached_requests=10000,
    )
    config = SimpleNamespace(
        speculative_config=spec,
        model_config=SimpleNamespace(max_model_len=max_model_len),
        compilation_config=SimpleNamespace(
            cudagraph_mode=CUDAGraphMode.FULL, max_cudagraph_capture_size=a.graph
        ),
        scheduler_config=SimpleNamespace(max_num_batched_tokens=8192),
        additional_config={
            "arctic_inference": {
                "suffix_num_threads": a.threads,
                "suffix_share_active_responses": a.share,
            }
        },
    )
    return ArcticSuffixDecodingProposer(config)


def run_level(a: argparse.Namespace, traces: Sequence[Trace], c: int) -> dict[str, Any]:
    """C requests in lock step; the proposer's time per step."""
    width = a.max_prompt + max(len(t.response) for t in traces) + a.k + 2
    proposer = make_proposer(a, width)
    clock = Clock()
    proposer.policy.clock = clock
    batch = FakeBatch(width)
    running: list[dict[str, Any]] = []
    nxt = 0
    samples: list[int] = []
    request_steps = tokens = 0
    profiler = cProfile.Profile() if a.profile else None

    def join() -> dict[str, Any]:
        nonlocal nxt
        t = traces[nxt % len(traces)]
        nxt += 1
        prompt = np.asarray(t.prompt[-a.max_prompt :], dtype=np.int64)
        return {"id": f"r{nxt}", "prompt": prompt, "resp": t.response.tolist(), "done": 0}

    drafts: dict[str, list[int]] = {}
    with gc_paused():
        for step in range(a.warmup + a.steps):
            while len(running) < c:
                running.append(join())
            # the step that just ran: each request's earned tokens
            sampled: list[list[int]] = []
            for r in running:
                d = drafts.get(r["id"], [])
                truth = r["resp"][r["done"] :]
                n = accepted_prefix(d, truth) + 1 if r["done"] else 1
                sampled.append(truth[:n])
                r["done"] += len(sampled[-1])
            batch.req_ids = [r["id"] for r in running]
            batch.req_id_to_index = {r["id"]: i for i, r in enumerate(running)}
            batch.num_tokens_no_spec = np.array(
                [len(r["prompt"]) + r["done"] for r in running], dtype=np.int64
            )
            # the proposer reads a row's tokens only when its request is new
            rows = np.zeros((len(running), width), dtype=np.int64)
            for i, r in enumerate(running):
                if r["id"] not in drafts:
                    n = len(r["prompt"])
                    rows[i, :n] = r["prompt"]
                    rows[i, n : n + r["done"]] = r["resp"][: r["done"]]
            batch.token_ids_cpu = rows
            timed = step >= a.warmup
            if timed and profiler is not None:
                profiler.enable()
            t0 = time.perf_counter_ns()
            out = proposer.propose(a.k, batch, sampled)
            dt = time.perf_counter_ns() - t0
            if timed and profiler is not None:
                profiler.disable()
            scheduled = len(running) + sum(len(d) for d in out)
            clock.t += (a.step_ms + a.token_ms * scheduled) / 1e3
            if timed:
                samples.append(dt)
                request_steps += len(running)
                tokens += sum(len(s) for s in sampled)
            drafts = {r["id"]: d for r, d in zip(running, out)}
            running = [r for r in running if r["done"] < len(r["resp"])]
    if profiler is not None:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(25)
        print(f"--- cProfile, concurrency {c} ---\n{buf.getvalue()}", file=sys.stderr)
    return {
        "concurrency": c,
        "steps": a.steps,
        "p50_us": percentile_us(samples, 50),
        "mean_us": float(np.mean(samples)) / 1e3,
        "p90_us": percentile_us(samples, 90),
        "per_request_us": float(np.sum(samples)) / 1e3 / max(request_steps, 1),
        "tokens_per_request_step": tokens / max(request_steps, 1),
        "policy": proposer.policy.snapshot()["kinds"],
    }


def render(rows: list[dict[str, Any]], a: argparse.Namespace) -> str:
    head = ["concurrency", "p50 us/step", "mean us/step", "p90 us/step", "us per request-step",
            "tokens per request-step", "policy choices"]  # fmt: skip
    body = [
        [r["concurrency"], f"{r['p50_us']:.0f}", f"{r['mean_us']:.0f}", f"{r['p90_us']:.0f}",
         f"{r['per_request_us']:.1f}", f"{r['tokens_per_request_step']:.2f}",
         ", ".join(f"{k} {v}" for k, v in sorted(r["policy"].items()))]
        for r in rows
    ]  # fmt: skip
    return "\n".join(
        [
            "# The suffix proposer's cost per engine step (no engine)",
            "",
            f"Traces: {a.traces}; k={a.k}, depth {a.depth}; {a.steps} timed steps after "
            f"{a.warmup}; {a.threads} drafting thread(s); live sharing "
            f"{'on' if a.share else 'off'}; modeled step cost {a.step_ms} ms + {a.token_ms} ms/token, full "
            f"graphs up to {a.graph} tokens.",
            "",
            *table(head, body),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    traces = load_traces(a.traces, find_tekken_file(), a.out_dir)
    stamp = version_stamp()
    rows = [run_level(a, traces, c) for c in a.concurrency]
    md = render(rows, a)
    md_path, _ = write_results(a.out_dir, "propose_cost", md, {"rows": rows}, stamp)
    print(stamped_markdown(md, stamp))
    print(f"wrote {md_path}, .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
