"""vLLM with and without speculation, side by side: no speculation, vLLM's
n-gram drafter, suffix decoding on arctic_inference_core (``suffix``, and
``suffix-unshared`` with the adapter's live sharing off), and optionally
vLLM's suffix proposer on Snowflake's arctic-inference (``suffix-ai``) and
the ``arctic`` methods.

Each method runs in its own process (one engine each; engines in one process
share vLLM's metrics registry). Every method serves the same agentic coding
prompts with greedy decoding at each concurrency level. With ``--rounds N``
the methods run N times, interleaved (round r starts at the r-th method), so
that load from other work on the machine spreads over all of them; the table
gives medians over rounds and each ratio is the median of the per-round
ratios. Reported, per method and concurrency: output tokens per second
(generated tokens / wall time); mean tokens per drafted step (1 + accepted
draft tokens per draft, from vLLM's spec-decode counters; steps without a
draft are not counted, so a drafter that often proposes nothing, like
n-gram, looks better here than per real step; 1.0 without speculation); the
share of requests whose greedy output is identical to no speculation's (with
the first differing positions; each difference is then scored once without
speculation, the two tokens' raw logits there, and called a near-tie when
they are at most 4 bf16 steps apart: ``benchlib/ties.py``, skipped with
``--no-tie-check``); and, unless ``--no-predict``, the tok/s the
model-free simulator predicts from the cost curve measured in the run
(bench/benchlib/suffix/predict.py; the curve is written to
``<out-dir>/vllm_compare_costs.json`` for ``bench/suffix_sim.py --predict``).

Defaults suit a small CPU machine and the README's main job:
    python bench/vllm_compare.py
Model: bench-lm shipped in bench/assets (27.3M-parameter Llama code model,
int8 weights dequantized once into bench/results/assets/), on CPU in the
dtype ``arctic_inference_vllm.testing.cpu_dtype()`` picks (bfloat16 where
the CPU has native bf16, else float32; ``ARCTIC_INFERENCE_CPU_DTYPE``
overrides); ``--model`` serves another (on CPU in that dtype too). Prompts:
the edit prompts of bench/assets/agentic-prompts.jsonl (real commits of
psf/requests), newest first; ``--prompts`` reads another file. Each
concurrency level gets its own prompts, so the suffix cache cannot replay an
earlier level's outputs. ``suffix-ai`` needs ``--arctic-path DIR``, a
directory holding arctic-inference 0.3.0 (for example
``pip install --no-deps --target DIR arctic_inference-0.3.0-*.whl``); the
worker imports it from there with no vLLM plugin loaded. The arctic methods
need ``--speculator DIR``. Results: <out-dir>/vllm_compare.{md,json,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.assets import agentic_prompts_path, model_to_serve
from benchlib.engine import (
    DEFAULT_METHODS,
    LOADS,
    METHODS,
    POLICY_METHODS,
    REFERENCE_SUFFIX,
    build_engine,
    generate_at_concurrency,
    load_prompts,
    spec_counters,
    worker_env,
)
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import median, table
from benchlib.ties import NEAR_TIE_ULPS, classify, divergences, first_difference
from benchlib.worker import emit_result, run_worker_process

COST_FILE = "vllm_compare_costs.json"
DECODE_PROBE_STEPS = 16  # decode steps timed per level for the cost file

# --------------------------------------------------------------------------- worker


def level_size(num_prompts: int, concurrency: int) -> int:
    return max(num_prompts, concurrency)


TIE_TOP = 20  # logits read at a divergence (vLLM's default max_logprobs)


def level_starts(args: argparse.Namespace) -> dict[int, int]:
    """Index of each concurrency level's first prompt."""
    starts, start = {}, 0
    for c in args.concurrency:
        starts[c] = start
        start += level_size(args.num_prompts, c)
    return starts


def run_tie_worker(args: argparse.Namespace) -> None:
    """No speculation scores each divergence of ``args.tie_file`` once: the
    raw logits of the best tokens after the prompt and the common prefix."""
    import json

    from vllm import SamplingParams, TokensPrompt

    divs = json.loads(Path(args.tie_file).read_text())
    llm, _, token_prompts = build_engine(args, logprobs_mode="raw_logits", max_logprobs=TIE_TOP)
    starts = level_starts(args)
    prompts = [
        TokensPrompt(
            prompt_token_ids=list(
                token_prompts[starts[d["concurrency"]] + d["request"]]["prompt_token_ids"]
            )
            + d["prefix"]
        )
        for d in divs
    ]
    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=TIE_TOP)
    scored = []
    for d, o in zip(divs, llm.generate(prompts, params, use_tqdm=False), strict=True):
        top = {int(t): float(v.logprob) for t, v in o.outputs[0].logprobs[0].items()}
        s = classify({k: v for k, v in d.items() if k != "prefix"}, top)
        scored.append({**s, "rescored_token": o.outputs[0].token_ids[0]})
    emit_result({"ties": scored})


def run_worker(args: argparse.Namespace) -> None:
    """One method, all concurrency levels; one result per level."""
    from vllm import SamplingParams, TokensPrompt

    if args.tie_file:
        run_tie_worker(args)
        return
    llm, tok, token_prompts = build_engine(args)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    warm = TokensPrompt(
        prompt_token_ids=tok.encode("def warm_up():\n    return 0\n", add_special_tokens=False)
    )
    llm.generate([warm], SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
    starts = level_starts(args)
    for c in args.concurrency:
        # Each level gets its own prompts (at least c of them): the suffix
        # cache keeps earlier outputs, and identical greedy outputs would be
        # copied for free.
        level_prompts = token_prompts[starts[c] : starts[c] + level_size(args.num_prompts, c)]
        before, t0 = spec_counters(llm), time.perf_counter()
        outputs = generate_at_concurrency(llm, level_prompts, params, c, args.load)
        wall = time.perf_counter() - t0
        after = spec_counters(llm)
        drafts = after["drafts"] - before["drafts"]
        accepted = after["accepted"] - before["accepted"]
        generated = sum(len(o) for o in outputs)
        result: dict[str, Any] = {
            "method": args.worker,
            "round": args.round,
            "concurrency": c,
            "requests": len(level_prompts),
            "generated_tokens": generated,
            "seconds": wall,
            "tokens_per_s": generated / wall,
            "mean_tokens_per_step": 1.0 + accepted / drafts if drafts else 1.0,
            "drafts": drafts,
            "accepted": accepted,
            "draft_tokens": after["draft_tokens"] - before["draft_tokens"],
            "outputs": outputs,
        }
        if args.worker in POLICY_METHODS:
            (result["policy"],) = llm.collective_rpc("draft_policy_state")
        if args.measure_costs:
            result["prompt_ids"] = [list(p["prompt_token_ids"]) for p in level_prompts]
            result["costs"] = measure_costs(llm, level_prompts, c)
        emit_result(result)


def measure_costs(llm: Any, prompts: list[Any], c: int) -> dict[str, Any]:
    """Step costs of the engine without speculation, for the simulator:
    a decode step of ``c`` requests (the time of 1 + N tokens minus that of
    1, over N; their prompts are cached by now) and each batch's prefill
    (prompts changed in their first token, so that no cached prefix helps)."""
    from vllm import SamplingParams, TokensPrompt

    def timed(batch: list[Any], n: int) -> float:
        p = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        t0 = time.perf_counter()
        llm.generate(batch, p, use_tqdm=False)
        return time.perf_counter() - t0

    vocab = llm.llm_engine.model_config.get_vocab_size()
    first = prompts[:c]
    steps = DECODE_PROBE_STEPS
    decode = min((timed(first, 1 + steps) - timed(first, 1)) / steps for _ in range(2))
    prefill_tokens, prefill_ms = [], []
    for i in range(0, len(prompts), c):
        batch = [
            TokensPrompt(
                prompt_token_ids=[(p["prompt_token_ids"][0] + 1) % vocab]
                + list(p["prompt_token_ids"][1:])
            )
            for p in prompts[i : i + c]
        ]
        prefill_tokens.append(sum(len(p["prompt_token_ids"]) for p in batch))
        prefill_ms.append(1e3 * timed(batch, 1))
    return {
        "decode_rows": len(first),
        "decode_ms": 1e3 * max(decode, 1e-6),
        "prefill_tokens": prefill_tokens,
        "prefill_ms": prefill_ms,
    }


# --------------------------------------------------------------------------- parent

LABELS = {
    "none": "none",
    "ngram": "vLLM n-gram",
    "suffix-ai": "vLLM suffix on arctic-inference",
    "suffix": "suffix, this core",
    "suffix-unshared": "suffix, this core, no live sharing",
    "arctic": "arctic (speculator)",
    "arctic+suffix": "arctic (speculator + suffix)",
}


def worker_cmd(
    method: str, args: argparse.Namespace, prompts_file: Path, round_: int, measure: bool
) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", method, "--prompts-file", str(prompts_file)]
    cmd += ["--model", args.model, "--dtype", args.dtype, "--num-prompts", str(args.num_prompts)]
    cmd += ["--k", str(args.k), "--depth", str(args.depth), "--max-tokens", str(args.max_tokens)]
    cmd += ["--max-model-len", str(args.max_model_len), "--round", str(round_)]
    cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    cmd += ["--concurrency", *map(str, args.concurrency), "--load", args.load]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.speculator:
        cmd += ["--speculator", args.speculator]
    if args.suffix_budget is not None:
        cmd += ["--suffix-budget", str(args.suffix_budget)]
    if args.cost_curve:
        cmd += ["--cost-curve", str(args.cost_curve)]
    if measure:
        cmd.append("--measure-costs")
    cmd += ["--async-scheduling", args.async_scheduling, "--cudagraph-mode", args.cudagraph_mode]
    return cmd


def round_order(methods: list[str], r: int) -> list[str]:
    """Round ``r`` starts at the ``r``-th method (interleaved rounds)."""
    i = r % len(methods)
    return methods[i:] + methods[:i]


def identity(results: list[dict]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per method and level: requests whose greedy output equals no
    speculation's in the same round, and the first differing positions."""
    base = {(r["round"], r["concurrency"]): r["outputs"] for r in results if r["method"] == "none"}
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in results:
        ref = base.get((r["round"], r["concurrency"]))
        if ref is None or r["method"] == "none":
            continue
        cell = out.setdefault((r["method"], r["concurrency"]), {"same": 0, "n": 0, "diffs": []})
        for a, b in zip(r["outputs"], ref):
            d = first_difference(a, b)
            cell["n"] += 1
            if d is None:
                cell["same"] += 1
            else:
                cell["diffs"].append(d)
    return out


def summarize(results: list[dict]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per method and level: median tok/s over rounds, the median of the
    per-round ratios to no speculation, and their range."""
    by: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        by.setdefault((r["method"], r["concurrency"]), []).append(r)
    none = {
        (r["round"], r["concurrency"]): r["tokens_per_s"] for r in results if r["method"] == "none"
    }
    out = {}
    for (m, c), rs in by.items():
        ratios = [r["tokens_per_s"] / none[(r["round"], c)] for r in rs if (r["round"], c) in none]
        drafts = sum(r["drafts"] for r in rs)
        out[(m, c)] = {
            "tokens_per_s": median(r["tokens_per_s"] for r in rs),
            "ratio": median(ratios) if ratios else float("nan"),
            "ratio_range": (min(ratios), max(ratios)) if ratios else None,
            "mean_tokens_per_step": 1.0 + sum(r["accepted"] for r in rs) / drafts
            if drafts
            else 1.0,
            "draft_tokens_per_draft": sum(r["draft_tokens"] for r in rs) / drafts
            if drafts
            else 0.0,
            "rounds": len(rs),
        }
    return out


def ratio_between(results: list[dict], a: str, b: str, c: int) -> list[float]:
    """Per round: tok/s of method ``a`` over method ``b`` at level ``c``."""
    tps = {(r["method"], r["round"]): r["tokens_per_s"] for r in results if r["concurrency"] == c}
    return [tps[(a, rnd)] / tps[(b, rnd)] for (m, rnd) in tps if m == a and (b, rnd) in tps]


def render(
    results: list[dict],
    meta: dict[str, Any],
    predicted: list[dict[str, Any]] | None = None,
    ties: list[dict] | None = None,
) -> str:
    levels = sorted({r["concurrency"] for r in results})
    summary = summarize(results)
    same = identity(results)
    pred = {(p["drafter"], p["concurrency"]): p for p in predicted or []}
    methods = [m for m in METHODS if any(r["method"] == m for r in results)]
    header = ["method"]
    for c in levels:
        header += [f"c={c} tok/s", f"c={c} vs none", f"c={c} tokens/step", f"c={c} identical"]
        if pred:
            header.append(f"c={c} predicted")
    rows = []
    for m in methods:
        cells: list[str] = [LABELS.get(m, m)]
        for c in levels:
            s = summary.get((m, c))
            if s is None:
                cells += ["n/a"] * (4 + bool(pred))
                continue
            rng = s["ratio_range"]
            # no ratio without a no-speculation run to divide by
            ratio = "" if m == "none" or rng is None else f"{s['ratio']:.2f}x"
            if rng and s["rounds"] > 1 and m != "none":
                ratio += f" ({rng[0]:.2f}-{rng[1]:.2f})"
            ident = same.get((m, c))
            ident_s = "" if ident is None else f"{ident['same']}/{ident['n']}"
            if ident and ident["diffs"]:
                ident_s += (
                    " (first diff at " + ", ".join(map(str, sorted(ident["diffs"])[:4])) + ")"
                )
            cells += [
                f"{s['tokens_per_s']:.1f}",
                ratio,
                f"{s['mean_tokens_per_step']:.2f}" if m != "none" else "",
                ident_s,
            ]
            if pred:
                p = pred.get((m, c))
                cells.append(f"{p['tokens_per_s']:.1f}" if p else "")
        rows.append(cells)
    lines = [
        "# vLLM: no speculation vs n-gram vs suffix decoding (arctic_inference_core)",
        "",
        f"Model: {meta['model']}, served in {meta['dtype']}. Prompts: {meta['prompts']} "
        f"({meta['num_prompts']} different requests in all, max(num_prompts, concurrency) per "
        f"level, greedy, up to {meta['max_tokens']} new tokens). k={meta['k']}, suffix depth "
        f"{meta['depth']}, n-gram n=2..5. {meta['machine']}. {meta['rounds']} interleaved "
        "round(s).",
        "",
        "Output tokens/s (median over rounds); vs none: the median of the per-round ratios "
        "(range over rounds); tokens/step: 1 + accepted / drafts from vLLM's counters (steps "
        "without a draft do not count); identical: requests whose greedy output equals no "
        "speculation's in the same round"
        + (
            "; predicted: the model-free simulator on the run's measured cost curve."
            if pred
            else "."
        ),
        "",
        *table(header, rows),
        *tie_lines(ties or []),
    ]
    peers = [m for m in ("suffix-ai", "ngram") if m in methods]
    if "suffix" in methods and peers:
        lines += ["", "This core's suffix against the peers, per round (median, range):", ""]
        for peer in peers:
            for c in levels:
                rs = ratio_between(results, "suffix", peer, c)
                if rs:
                    lines.append(
                        f"- vs {LABELS[peer]}, c={c}: {median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"
                    )
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = summarize(results)
    levels = sorted({r["concurrency"] for r in results})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m in [m for m in METHODS if any(r["method"] == m for r in results)]:
        cs = [c for c in levels if (m, c) in summary]
        ax.plot(cs, [summary[(m, c)]["tokens_per_s"] for c in cs], marker="o", label=LABELS[m])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("output tokens/s (median over rounds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def cost_file(results: list[dict], meta: dict[str, Any]) -> Any:
    """The run's measured costs: no speculation's decode steps and prefills
    (the ``none`` worker's probes) and the draft policy's learned curve (the
    ``suffix`` worker's, else any policy method's, last level)."""
    from benchlib.suffix.predict import CostFile

    from arctic_inference_vllm.suffix.step_cost import StepCostModel

    probes = [r["costs"] for r in results if r.get("costs")]
    policies = sorted(
        (r for r in results if r.get("policy")),
        key=lambda r: (r["method"] != "suffix", -r["round"], -r["concurrency"]),
    )
    if not probes or not policies:
        return None
    rows = sorted({p["decode_rows"]: p["decode_ms"] for p in probes}.items())
    best = policies[0]
    levels = {
        r["concurrency"]: StepCostModel.from_snapshot(r["policy"]["cost"])
        for r in policies
        if r["method"] == best["method"] and r["round"] == best["round"]
    }
    return CostFile(
        StepCostModel.from_snapshot(policies[0]["policy"]["cost"]),
        [r for r, _ in rows],
        [ms for _, ms in rows],
        [t for p in probes for t in p["prefill_tokens"]],
        [ms for p in probes for ms in p["prefill_ms"]],
        meta["graph_mode"],
        meta["graph_size"],
        {"machine": meta["machine"], "model": meta["model"], "curve_from": best["method"]},
        levels,
    )


def predicted_rows(
    results: list[dict], costs: Any, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The simulator's tok/s for the run's traces (the measured none outputs)."""
    from benchlib.suffix.drafters import SpecParams, import_arctic_reference
    from benchlib.suffix.predict import Level, Request, predict

    first = min(r["round"] for r in results if r.get("prompt_ids"))
    levels = []
    for r in sorted(
        (r for r in results if r.get("prompt_ids") and r["round"] == first),
        key=lambda r: r["concurrency"],
    ):
        c = r["concurrency"]
        reqs = [Request(p, o) for p, o in zip(r["prompt_ids"], r["outputs"])]
        levels.append(Level(c, reqs, args.load))
    ref = None
    if args.arctic_path and REFERENCE_SUFFIX in args.methods:
        ref = import_arctic_reference(Path(args.arctic_path))
    return predict(levels, costs, args.k, args.depth, SpecParams(), ref, args.suffix_budget)


def resumed_results(partial: Path, prompts: list, args: argparse.Namespace) -> list[dict]:
    """The runs an earlier, cut-short invocation finished (``--resume``):
    those of this invocation's methods, rounds and levels, when it served the
    same prompts; none otherwise."""
    import json

    if not partial.exists():
        return []
    saved = json.loads(partial.read_text())
    if saved.get("prompts") != json.loads(json.dumps(prompts)):  # tuples read back as lists
        print(f"--resume: {partial} served other prompts; starting over", file=sys.stderr)
        return []
    keep = [
        r
        for r in saved["results"]
        if r["method"] in args.methods
        and r["round"] < args.rounds
        and r["concurrency"] in args.concurrency
    ]
    per_run = Counter((r["round"], r["method"]) for r in keep)  # levels each run finished
    whole = {run for run, n in per_run.items() if n == len(args.concurrency)}
    kept = [r for r in keep if (r["round"], r["method"]) in whole]
    print(f"--resume: {len(whole)} finished run(s) kept from {partial}", file=sys.stderr)
    return kept


def check_ties(args: argparse.Namespace, results: list[dict], prompts_file: Path) -> list[dict]:
    """Every divergence from no speculation, scored by a worker without
    speculation (none when the outputs agree or ``none`` did not run)."""
    import json

    divs = divergences(results)
    if not divs:
        return []
    tie_file = args.out_dir / "vllm_compare_divergences.json"
    tie_file.write_text(json.dumps(divs))
    cmd = worker_cmd("none", args, prompts_file, 0, False) + ["--tie-file", str(tie_file)]
    log = args.out_dir / "vllm_compare_ties.log"
    # nothing is timed here: the engine may run in the worker's own process
    env = {**worker_env("none", args.arctic_path), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    (res,) = run_worker_process("ties", cmd, log, env, 1)
    return list(res["ties"])


def tie_lines(ties: list[dict]) -> list[str]:
    """The divergences, per method and level, for the Markdown table."""
    if not ties:
        return []
    lines = [
        "",
        "Where an output differs from no speculation's: its first differing position, scored "
        "once without speculation (raw logits after the prompt and the common prefix); a "
        f"near-tie when the two tokens' logits are at most {NEAR_TIE_ULPS:g} bf16 steps apart "
        "(bf16's spacing at the larger logit):",
        "",
    ]
    by: dict[tuple[str, int], list[dict]] = {}
    for t in ties:
        by.setdefault((t["method"], t["concurrency"]), []).append(t)
    for (m, c), ts in sorted(by.items()):
        near = sum(bool(t["near_tie"]) for t in ts)
        gaps = sorted(
            f"{t['gap_ulps']:.1f}" if t["gap_ulps"] is not None else "outside top" for t in ts
        )
        worst = max(
            (t for t in ts if not t["near_tie"]), key=lambda t: t["gap_ulps"] or 1e9, default=None
        )
        lines.append(
            f"- {LABELS.get(m, m)}, c={c}: {len(ts)} differ, {near} near-ties; gaps in bf16 "
            f"steps: {', '.join(gaps[:12])}"
            + (
                f"; widest: request {worst['request']} at position {worst['position']} "
                f"(logits {worst['none_logit']} vs {worst['spec_logit']})"
                if worst
                else ""
            )
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="model directory (default: the shipped bench-lm, bench/assets)")
    p.add_argument(
        "--prompts",
        "--traces",
        dest="prompts",
        help="JSON lines with 'prompt' and 'family' fields "
        "(default: bench/assets/agentic-prompts.jsonl)",
    )
    p.add_argument(
        "--num-prompts",
        type=int,
        default=8,
        help="requests per concurrency level (at least the concurrency)",
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument(
        "--load",
        choices=LOADS,
        default="steady",
        help="steady: keep CONCURRENCY requests running, a new one joining as one finishes "
        "(as `vllm bench serve --max-concurrency`); waves: CONCURRENCY at a time, each wave "
        "waiting for its slowest request (this script's load before 2026-12-03)",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every method this many times, interleaved (medians and per-round ratios)",
    )
    p.add_argument(
        "--speculator",
        help="speculator directory for the arctic methods "
        "(bench/speculator_acceptance.py trains one)",
    )
    p.add_argument(
        "--arctic-path",
        help=f"directory holding arctic-inference 0.3.0, for method {REFERENCE_SUFFIX}",
    )
    p.add_argument("--k", type=int, default=32, help="num_speculative_tokens")
    p.add_argument("--depth", type=int, default=64, help="suffix_decoding_max_tree_depth")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.15,
        help="GPU memory share (on CPU the KV cache is sized for the run: concurrency x max-model-len)",
    )
    p.add_argument("--enforce-eager", action="store_true", default=None)
    p.add_argument(
        "--suffix-budget",
        type=int,
        default=None,
        help="suffix_step_token_budget for the adapter (a fixed cap instead of its policy)",
    )
    p.add_argument(
        "--cost-curve",
        type=Path,
        default=None,
        help="suffix_step_cost_curve for the adapter (a measured curve its policy starts from)",
    )
    p.add_argument(
        "--no-predict",
        dest="predict",
        action="store_false",
        help="skip the cost probes and the simulator's predicted column",
    )
    p.add_argument(
        "--async-scheduling",
        choices=("default", "on", "off"),
        default="default",
        help="vLLM's async scheduling (suffix decoding runs synchronously regardless)",
    )
    p.add_argument(
        "--cudagraph-mode",
        default="default",
        choices=("default", "NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE"),
        help="vLLM's compilation_config cudagraph_mode (GPU)",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs that a cut-short invocation with the same prompts finished "
        "(<out-dir>/vllm_compare_partial.json) and run only the rest",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)  # the worker's, set by main
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--measure-costs", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tie-file", help=argparse.SUPPRESS)
    p.add_argument(
        "--no-tie-check",
        dest="tie_check",
        action="store_false",
        help="skip scoring where outputs differ from no speculation's",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if any(m.startswith("arctic") for m in args.methods) and not args.speculator:
        p.error("the arctic methods need --speculator DIR")
    if REFERENCE_SUFFIX in args.methods and not args.arctic_path:
        p.error(f"method {REFERENCE_SUFFIX} needs --arctic-path DIR (arctic-inference 0.3.0)")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")

    import json

    import torch
    from tqdm import tqdm

    args.out_dir.mkdir(parents=True, exist_ok=True)
    on_gpu = torch.cuda.is_available()
    if args.enforce_eager is None:  # CPU: skip compilation; GPU: use CUDA graphs
        args.enforce_eager = not on_gpu
    args.model, model_desc, args.dtype = model_to_serve(args.model, on_gpu)
    config = json.loads((Path(args.model) / "config.json").read_text())
    args.max_model_len = min(
        args.max_model_len, config.get("max_position_embeddings", args.max_model_len)
    )
    total = sum(level_size(args.num_prompts, c) for c in args.concurrency)
    prompts_path = args.prompts or str(agentic_prompts_path())
    prompts, prompts_desc = load_prompts(prompts_path, total)
    if len(prompts) < total:
        p.error(
            f"{total} prompts needed ({args.num_prompts} per level, at least the concurrency), "
            f"{prompts_path} has {len(prompts)} edit prompts"
        )
    prompts_file = args.out_dir / "vllm_compare_prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    stamp = version_stamp()
    predict = args.predict and "none" in args.methods
    partial = args.out_dir / "vllm_compare_partial.json"
    results = resumed_results(partial, prompts, args) if args.resume else []
    done = {(r["round"], r["method"]) for r in results}
    runs = [
        (r, m)
        for r in range(args.rounds)
        for m in round_order(list(args.methods), r)
        if (r, m) not in done
    ]
    with tqdm(runs, desc="vLLM runs", unit="run") as bar:
        for r, method in bar:
            bar.set_postfix_str(f"round {r + 1}: {method}")
            log = args.out_dir / f"vllm_compare_{method}.log"
            measure = predict and method == "none" and r == 0
            cmd = worker_cmd(method, args, prompts_file, r, measure)
            env = worker_env(method, args.arctic_path)
            results += run_worker_process(method, cmd, log, env, len(args.concurrency))
            # what has run so far survives a run cut short (a lease's time limit)
            partial.write_text(json.dumps({"prompts": prompts, "results": results}))
    graph_mode = (
        "NONE"
        if args.enforce_eager
        # unset, the adapter runs this core's suffix in FULL (suffix/graph_mode.py)
        else ("FULL" if args.cudagraph_mode == "default" else args.cudagraph_mode)
    )
    meta = {
        "model": model_desc,
        "dtype": args.dtype if args.dtype != "auto" else "the model's dtype",
        "prompts": prompts_desc
        if args.prompts
        else "bench/assets/agentic-prompts.jsonl (edit requests from real psf/requests commits, "
        "newest first)",
        "num_prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "k": args.k,
        "depth": args.depth,
        "rounds": args.rounds,
        "load": args.load,
        "machine": "GPU" if on_gpu else "CPU, eager" if args.enforce_eager else "CPU",
        "graph_mode": graph_mode,
        "graph_size": 0 if graph_mode == "NONE" else 512,  # vLLM's default largest graph
    }
    ties = check_ties(args, results, prompts_file) if args.tie_check else []
    predicted = None
    costs = cost_file(results, meta) if predict else None
    if costs is not None:
        (args.out_dir / COST_FILE).write_text(json.dumps(costs.to_json(), indent=1))
        predicted = predicted_rows(results, costs, args)
    md = render(results, meta, predicted, ties)
    md_path, _ = write_results(
        args.out_dir,
        "vllm_compare",
        md,
        {"meta": meta, "results": results, "predicted": predicted, "ties": ties},
        stamp,
    )
    drew = plot(results, args.out_dir / "vllm_compare.png")
    print("\n" + stamped_markdown(md, stamp))
    print(
        f"wrote {md_path}, .json" + (", .png" if drew else "") + (f", {COST_FILE}" if costs else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
