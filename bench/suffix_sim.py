"""Model-free simulator and micro-benchmark for suffix decoding.

What it measures
----------------
Replays recorded agentic coding requests (JSON lines with ``id``, ``family``,
``prompt``, ``response``) as a single-stream server running greedy decoding
with speculation, without any model: the recorded response *is* the greedy
output, so a draft token is accepted exactly when it equals the next true
response token.

For every request, in file order, with one global
:class:`~arctic_inference_core.suffix.SuffixDecodingCache` (earlier responses
stay cached, so cross-request repetition counts):

1. ``start_request(id, prompt)``;
2. each step drafts from the last ``depth`` tokens of prompt + generated so far
   (``max_spec_tokens=k``, ``max_spec_factor=1.0``, ``min_token_prob=0.1``;
   see ``--spec-factor``, ``--spec-offset``, ``--min-token-prob``),
   accepts the longest draft prefix that matches the true continuation, then
   appends the accepted tokens + 1 true token (``add_active_response``); a step
   thus yields ``accepted + 1`` tokens, capped at the end of the response;
3. ``stop_request(id)``.

Reported (Markdown table in ``<out-dir>/suffix_sim.md``, raw numbers in
``<out-dir>/suffix_sim.json``):

* mean tokens per step (= response tokens / steps) per family and overall,
  for suffix decoding at ``--depth`` (and ``--extra-depths``), and for vLLM's
  n-gram prompt-lookup drafter (min n=2, max n=5, same k) and for Snowflake's
  reference implementation (arctic-inference's ``SuffixDecodingCache``, at
  ``--depth``, same k, factor, offset and min prob, if importable; see
  ``--arctic-path``) replayed the same way, next to the published reference
  numbers; plus per-request head-to-heads against those peers. The n-gram peer
  calls
  ``vllm.v1.spec_decode.ngram_proposer._find_longest_matched_ngram_and_propose_tokens``
  (the per-request kernel NgramProposer runs) on prompt + generated tokens, so
  no VllmConfig is needed;
* speculate cost per call (p50/p99 us, ``perf_counter_ns`` around each call at
  the Python API), for suffix decoding (ours and the reference) and for vLLM's
  jitted n-gram matcher (after JIT warmup);
* update cost: ``add_active_response`` time per added token,
  ``stop_request`` time per response token (ours moves a finished response
  into the global tree there; the reference does it in
  ``add_active_response``), and ``start_request`` time per prompt token;
* bytes per cached token (``memory_bytes() / num_cached_tokens()``) at the
  quartiles of the run and at the end; for the reference,
  ``estimate_memory()`` of its trees over the tokens the replay put in them;
* ``speculate_batch`` cost per engine step at several batch sizes, against the
  loop an engine would otherwise run (per request ``add_active_response`` +
  ``speculate``), each step appending to every request either the tokens its
  previous draft earned (accepted + 1) or a single token.

The garbage collector is disabled inside timed loops (collected before). The
git commit and a hash of the native module are recorded with the results, as
the library is under development.

How to run
----------
::

    . .venv/bin/activate
    python bench/suffix_sim.py                       # all traces, ~1-2 minutes
    python bench/suffix_sim.py --limit 100 --no-ngram  # quick run
    python bench/suffix_sim.py --traces path/to/requests.jsonl --depth 32 --k 16
    python bench/suffix_sim.py --arctic-path DIR     # reference from a --target install

The reference peer is optional: arctic-inference (built from its sdist, e.g.
``pip wheel --no-deps --no-build-isolation arctic-inference==0.3.0`` then
``pip install --no-deps --target DIR <wheel>``) is imported from ``DIR`` or,
without ``--arctic-path``, from the environment; if that fails the peer is
skipped with a note. Only ``arctic_inference.suffix_decoding`` is imported.

Tokenization uses the tekken tokenizer shipped inside ``mistral_common``
(nothing is downloaded); tokenized traces are cached under ``--out-dir``.
A version stamp (date, hardware, Python, torch, vLLM, core version) ends the
Markdown report and is stored under ``"versions"`` in the JSON.

Predicting a served run
-----------------------
::

    python bench/suffix_sim.py --predict-from bench/results [--cost-curve FILE] \
        [--graph-mode FULL_AND_PIECEWISE --graph-size 512] [--budget N]

replays the requests a ``bench/vllm_compare.py`` run served (its
``vllm_compare.json``: prompts and the greedy outputs without speculation,
per concurrency level) with a measured cost curve (default: the run's own
``vllm_compare_costs.json``; any file in that format, for example one
measured on a GPU) and prints the output tokens/s it predicts per
concurrency for no speculation, this core's suffix decoding with its draft
policy, and vLLM's suffix proposer on arctic-inference (with
``--arctic-path``), next to what the run measured
(``benchlib/suffix/predict.py``).

The simulator lives in ``bench/benchlib/suffix/`` (data, drafters, replay,
microbench, report, predict); this script is its command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# numpy's OpenBLAS pool otherwise spins on the second core between calls and
# skews every timing on a 2-core machine; this benchmark does no linear algebra.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchlib.paths import AGENTIC_TRACES, RESULTS  # noqa: E402
from benchlib.stamps import stamped_markdown, version_stamp, write_results  # noqa: E402
from benchlib.suffix.data import find_tekken_file, load_traces  # noqa: E402
from benchlib.suffix.drafters import SpecParams, import_arctic_reference  # noqa: E402
from benchlib.suffix.microbench import bench_batch  # noqa: E402
from benchlib.suffix.replay import (  # noqa: E402
    head_to_head,
    replay_arctic,
    replay_ngram,
    replay_suffix,
)
from benchlib.suffix.report import (  # noqa: E402
    REFERENCE,
    library_version,
    render_markdown,
    target_checks,
)
from benchlib.synthetic import synthetic_trace_file  # noqa: E402

DEFAULT_TRACES = AGENTIC_TRACES
DEFAULT_OUT_DIR = RESULTS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--traces",
        type=Path,
        default=DEFAULT_TRACES,
        help=f"JSON lines trace file (default: {DEFAULT_TRACES}, else synthetic traces)",
    )
    p.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="num_threads of the cache in the batch section (default: 1 2)",
    )
    p.add_argument(
        "--synthetic-n",
        type=int,
        default=300,
        help="number of synthetic traces when the default trace file is absent (default: 300)",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tekken .json file (default: newest in mistral_common/data)",
    )
    p.add_argument(
        "--depth", type=int, default=64, help="max_tree_depth and context length (default: 64)"
    )
    p.add_argument(
        "--extra-depths",
        type=int,
        nargs="*",
        default=[24],
        help="more depths to replay (default: 24)",
    )
    p.add_argument(
        "--context-len",
        type=int,
        default=None,
        help="context tokens passed to speculate (default: each run's depth)",
    )
    p.add_argument("--spec-factor", type=float, default=1.0, help="max_spec_factor (default: 1.0)")
    p.add_argument("--spec-offset", type=float, default=0.0, help="max_spec_offset (default: 0.0)")
    p.add_argument(
        "--min-token-prob", type=float, default=0.1, help="min_token_prob (default: 0.1)"
    )
    p.add_argument(
        "--k", type=int, default=32, help="max_spec_tokens, also the n-gram k (default: 32)"
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N traces")
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[1, 16, 64, 256],
        help="(default: 1 16 64 256; none to skip)",
    )
    p.add_argument(
        "--batch-advance",
        nargs="*",
        choices=("accepted", "one"),
        default=["accepted", "one"],
        help="tokens appended per request-step: accepted draft + 1, or one (default: both)",
    )
    p.add_argument(
        "--batch-steps", type=int, default=50, help="engine steps per batch size (default: 50)"
    )
    p.add_argument("--no-ngram", action="store_true", help="skip the vLLM n-gram peer")
    p.add_argument(
        "--share",
        action="store_true",
        help="also replay this core with share_active_responses (costs of live sharing)",
    )
    p.add_argument(
        "--arctic-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory to put first on sys.path to import arctic-inference, the reference "
        "peer (default: import it from the environment; skipped with a note if that fails)",
    )
    p.add_argument(
        "--no-arctic", action="store_true", help="skip the arctic-inference reference peer"
    )
    p.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT_DIR, help=f"(default: {DEFAULT_OUT_DIR})"
    )
    p.add_argument(
        "--predict-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="predict the tok/s of the vllm_compare.py run in DIR instead (see below)",
    )
    p.add_argument(
        "--cost-curve",
        type=Path,
        default=None,
        help="with --predict-from: the cost file (default: DIR/vllm_compare_costs.json)",
    )
    p.add_argument("--graph-mode", default=None, help="with --predict-from: cudagraph mode")
    p.add_argument(
        "--graph-size", type=int, default=None, help="with --predict-from: largest graph"
    )
    p.add_argument(
        "--budget", type=int, default=None, help="with --predict-from: a fixed step token budget"
    )
    return p.parse_args(argv)


def predict_run(args: argparse.Namespace) -> int:
    """--predict-from: the simulator's tok/s for a vllm_compare.py run."""
    import json

    from benchlib.suffix.predict import CostFile, Level, Request, predict
    from benchlib.tables import median, table

    run_file = args.predict_from / "vllm_compare.json"
    try:
        run = json.loads(run_file.read_text())
        costs = CostFile.load(args.cost_curve or args.predict_from / "vllm_compare_costs.json")
    except (OSError, json.JSONDecodeError, ValueError) as e:
        print(f"error: {e}; run bench/vllm_compare.py (with none) first", file=sys.stderr)
        return 2
    if args.graph_mode:
        costs.graph_mode = args.graph_mode
    if args.graph_size is not None:
        costs.graph_size = args.graph_size
    traced = [r for r in run["results"] if r.get("prompt_ids")]
    if not traced:
        print(
            f"error: {run_file} has no traced levels (run it without --no-predict)", file=sys.stderr
        )
        return 2
    first = min(r["round"] for r in traced)
    levels = []
    for r in sorted((r for r in traced if r["round"] == first), key=lambda r: r["concurrency"]):
        reqs = [Request(p, o) for p, o in zip(r["prompt_ids"], r["outputs"])]
        c = r["concurrency"]
        # runs recorded before the load was recorded sent waves
        levels.append(Level(c, reqs, run["meta"].get("load", "waves")))
    meta = run["meta"]
    ref = None if args.no_arctic else import_arctic_reference(args.arctic_path)
    rows = predict(levels, costs, meta["k"], meta["depth"], SpecParams(), ref, args.budget)
    measured: dict[tuple[str, int], list[float]] = {}
    for r in run["results"]:
        measured.setdefault((r["method"], r["concurrency"]), []).append(r["tokens_per_s"])
    cells = [
        [
            p["drafter"],
            str(p["concurrency"]),
            f"{p['tokens_per_s']:.1f}",
            f"{median(measured.get((p['drafter'], p['concurrency']), [])):.1f}",
            f"{p['mean_tokens_per_step']:.2f}",
            str(p["steps"]),
        ]
        for p in rows
    ]
    print(
        f"Predicted from {run_file} with {args.cost_curve or 'its own cost curve'} "
        f"(graphs {costs.graph_mode}, largest {costs.graph_size})\n"
    )
    print(
        "\n".join(
            table(
                [
                    "drafter",
                    "concurrency",
                    "predicted tok/s",
                    "measured tok/s",
                    "tokens/drafted step",
                    "steps",
                ],
                cells,
            )
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.predict_from is not None:
        return predict_run(args)
    t_start = time.perf_counter()
    stamp = version_stamp()
    synthetic = False
    if not args.traces.is_file():
        if args.traces != DEFAULT_TRACES:
            print(
                f"error: trace file {args.traces} not found; pass --traces PATH (JSON lines with "
                "id, family, prompt, response)",
                file=sys.stderr,
            )
            return 2
        args.traces = synthetic_trace_file(args.out_dir, args.synthetic_n)
        synthetic = True
        print(
            f"[data] {DEFAULT_TRACES} not found: using {args.synthetic_n} synthetic traces "
            f"from the Python standard library ({args.traces}); published numbers do not apply"
        )
    tokenizer = args.tokenizer or find_tekken_file()
    try:
        traces = load_traces(args.traces, tokenizer, args.out_dir)[: args.limit]
    except ValueError as e:  # the trace reader names the file and line
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not traces:
        print("error: no traces to replay", file=sys.stderr)
        return 2
    if len({t.id for t in traces}) != len(traces):
        print("error: trace ids must be unique (they are used as request ids)", file=sys.stderr)
        return 2
    print(
        f"[data] {len(traces)} traces, {sum(len(t.response) for t in traces)} response tokens "
        f"({time.perf_counter() - t_start:.1f} s to load)"
    )

    params = SpecParams(args.spec_factor, args.spec_offset, args.min_token_prob)
    replays = [replay_suffix(traces, args.depth, args.k, params, args.context_len)]
    replays += [
        replay_suffix(traces, d, args.k, params, args.context_len)
        for d in args.extra_depths
        if d != args.depth
    ]
    if args.share:
        replays.append(replay_suffix(traces, args.depth, args.k, params, args.context_len, True))
    peers: list[dict[str, Any]] = []
    ref = None if args.no_arctic else import_arctic_reference(args.arctic_path)
    if ref is not None:
        peers.append(replay_arctic(traces, ref, args.depth, args.k, params, args.context_len))
    if not args.no_ngram:
        ngram = replay_ngram(traces, args.k)
        if ngram is not None:
            peers.append(ngram)
    replays += peers
    batch = bench_batch(
        traces,
        args.batch_sizes,
        args.batch_advance,
        args.depth,
        args.k,
        args.batch_steps,
        args.threads,
    )

    report = {
        "meta": {
            "traces": str(args.traces),
            "tokenizer": tokenizer.name,
            "num_traces": len(traces),
            "family_counts": dict(Counter(t.family for t in traces)),
            "depth": args.depth,
            "k": args.k,
            "context_len": args.context_len or args.depth,
            "spec_params": asdict(params),
            "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
            "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
            "library_commit": library_version(),
            "arctic_reference": asdict(ref) | {"cache_cls": ref.cache_cls.__qualname__}
            if ref
            else None,
            "total_seconds": time.perf_counter() - t_start,
        },
        "reference": {} if synthetic else REFERENCE,
        "replays": replays,
        "batch": batch,
    }
    report["head_to_head"] = [head_to_head(replays[0], peer, traces) for peer in peers]
    report["targets"] = [
        {"target": t, "met": ok, "measured": m} for t, ok, m in target_checks(report)
    ]
    markdown = render_markdown(report)
    write_results(args.out_dir, "suffix_sim", markdown, report, stamp, indent=2)
    print()
    print(stamped_markdown(markdown, stamp))
    print(f"wrote {args.out_dir / 'suffix_sim.md'} and {args.out_dir / 'suffix_sim.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
