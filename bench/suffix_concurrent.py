"""Concurrent replay of suffix decoding: K requests in lock step, no model.

    python bench/suffix_concurrent.py                     # all traffic kinds
    python bench/suffix_concurrent.py --arctic-path DIR   # with arctic-inference
    python bench/suffix_concurrent.py --traffic samples-4 --sample-prompts 50

Each engine step serves every running request at once: the tokens its
previous draft earned are added and it drafts again (``speculate_batch`` for
this core). The recorded response is the greedy output, so a draft token is
accepted exactly when it equals the next true token. Traffic: independent
agentic traces (continuous batching, ``--slots`` at a time), n samples of
each prompt (siblings built from the recorded response with edits; see
``benchlib/suffix/concurrent.py``), and parallel tool calls over one
repository (up to 8 requests on the same file started together). Drafters:
this core with live sharing (``share_active_responses``) on and off, and
arctic-inference (``--arctic-path``; its cache shares running outputs).

Reported per traffic and drafter: tokens per request-step (overall and per
family), the cache's time per engine step (drafting plus the starts and
stops of that step; p50 / p99) and per request-step (p50), and the peak
bytes the trees hold per cached token. Results:
``<out-dir>/suffix_concurrent.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see suffix_sim.py

from benchlib.paths import AGENTIC_TRACES, RESULTS  # noqa: E402
from benchlib.stamps import stamped_markdown, version_stamp, write_results  # noqa: E402
from benchlib.suffix.concurrent import (  # noqa: E402
    ArcticEngine,
    CoreEngine,
    build_traffic,
    edited_file,
    run_concurrent,
)
from benchlib.suffix.data import find_tekken_file, load_traces  # noqa: E402
from benchlib.suffix.drafters import SpecParams, import_arctic_reference  # noqa: E402
from benchlib.tables import fmt, table  # noqa: E402

TRAFFIC = ("independent", "samples-4", "samples-8", "tools")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--traces", type=Path, default=AGENTIC_TRACES)
    p.add_argument("--traffic", nargs="+", choices=TRAFFIC, default=list(TRAFFIC))
    p.add_argument("--slots", type=int, default=16, help="requests running at once (default 16)")
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--k", type=int, default=32, help="max_spec_tokens (default 32)")
    p.add_argument("--limit", type=int, default=None, help="first N traces only")
    p.add_argument(
        "--sample-prompts", type=int, default=150, help="prompts sampled n times (default 150)"
    )
    p.add_argument("--edit-rate", type=float, default=0.02, help="sibling edits per token")
    p.add_argument("--group", type=int, default=8, help="tool calls started together")
    p.add_argument("--arctic-path", type=Path, default=None, metavar="DIR")
    p.add_argument("--no-arctic", action="store_true")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.slots < 1 or a.group < 1 or a.sample_prompts < 1:
        p.error("--slots, --group and --sample-prompts must be >= 1")
    if not a.traces.is_file():
        p.error(f"trace file {a.traces} not found (JSON lines: id, family, prompt, response)")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    stamp = version_stamp()
    traces = load_traces(a.traces, find_tekken_file(), a.out_dir)[: a.limit]
    with open(a.traces) as f:
        prompts = {r["id"]: r["prompt"] for r in map(json.loads, f)}
    files = {t.id: edited_file(t, prompts) for t in traces}
    params = SpecParams()
    ref = None if a.no_arctic else import_arctic_reference(a.arctic_path)
    results: list[dict[str, Any]] = []
    for kind in a.traffic:
        if kind.startswith("samples-"):
            n = int(kind.split("-")[1])
            jobs = build_traffic("samples", traces[: a.sample_prompts], n=n, edit_rate=a.edit_rate)
            slots, barrier = max(a.slots, n), False
        elif kind == "tools":
            jobs = build_traffic("tools", traces, group=a.group, files=files)
            slots, barrier = max(a.slots, a.group), True
        else:
            jobs = build_traffic("independent", traces)
            slots, barrier = a.slots, False
        engines: list[Any] = [
            CoreEngine(a.depth, a.k, params, share=False),
            CoreEngine(a.depth, a.k, params, share=True),
        ]
        if ref is not None:
            engines.append(ArcticEngine(ref, a.depth, a.k, params))
        for engine in engines:
            r = run_concurrent(engine, jobs, slots, barrier)
            r |= {"traffic": kind, "requests": len(jobs), "slots": slots}
            results.append(r)
            print(
                f"[{kind}] {r['name']}: {fmt(r['tokens_per_step'])} tokens/step, "
                f"{fmt(r['step_us']['p50'], 1)} us/step p50, {fmt(r['bytes_per_token'], 0)} B/token "
                f"({r['seconds']:.1f} s)"
            )
    md = render(a, results)
    write_results(a.out_dir, "suffix_concurrent", md, {"args": _args(a), "results": results}, stamp)
    print()
    print(stamped_markdown(md, stamp))
    return 0


def _args(a: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}


def render(a: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["traffic"],
            r["name"],
            f"{r['requests']} / {r['slots']} ({fmt(r['mean_batch'], 1)})",
            f"**{fmt(r['tokens_per_step'])}**",
            " / ".join(fmt(r["families"].get(f, float("nan"))) for f in FAMILIES),
            f"{fmt(r['step_us']['p50'], 1)} / {fmt(r['step_us']['p99'], 0)}",
            fmt(r["request_step_us_p50"], 2),
            fmt(r["bytes_per_token"], 0),
        ]
        for r in results
    ]
    return "\n".join(
        [
            "# Suffix decoding, concurrent replay",
            "",
            f"k={a.k}, depth {a.depth}, max_spec_factor 1, min_token_prob 0.1; "
            f"samples: the first {a.sample_prompts} prompts, sibling edit rate {a.edit_rate}; "
            f"tool calls: up to {a.group} requests on one file together.",
            "",
            *table(
                [
                    "traffic",
                    "drafter",
                    "requests / slots (mean running)",
                    "tokens per step",
                    " / ".join(FAMILIES),
                    "us per engine step p50 / p99 (with starts, stops)",
                    "us per request-step p50",
                    "bytes per cached token (peak)",
                ],
                rows,
                "llrrrrrr",
            ),
        ]
    )


FAMILIES = ("edit_file", "edit_diff", "new_file")


if __name__ == "__main__":
    sys.exit(main())
