"""vLLM with and without speculation, side by side: no speculation, vLLM's
n-gram drafter, and suffix decoding on arctic_inference_core.

Each method runs in its own process (one engine each; engines in one process
share vLLM's metrics registry). Every method serves the same agentic coding
prompts with greedy decoding at each concurrency level. Reported, per method
and concurrency: output tokens per second (generated tokens / wall time) and
mean tokens per drafted step (1 + accepted draft tokens per draft, from
vLLM's spec-decode counters; steps without a draft are not counted, so a
drafter that often proposes nothing, like n-gram, looks better here than per
real step; 1.0 without speculation). The arctic methods (speculator, or
speculator + suffix) need ``--speculator DIR``.

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
earlier level's outputs. Results: <out-dir>/vllm_compare.{md,json,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.assets import agentic_prompts_path, model_to_serve
from benchlib.engine import (
    DEFAULT_METHODS,
    METHODS,
    build_engine,
    load_prompts,
    spec_counters,
    worker_env,
)
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import table
from benchlib.worker import emit_result, run_worker_process

# --------------------------------------------------------------------------- worker


def level_size(num_prompts: int, concurrency: int) -> int:
    return max(num_prompts, concurrency)


def run_worker(args: argparse.Namespace) -> None:
    """One method, all concurrency levels; one result per level."""
    from vllm import SamplingParams, TokensPrompt

    llm, tok, token_prompts = build_engine(args)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    warm = TokensPrompt(
        prompt_token_ids=tok.encode("def warm_up():\n    return 0\n", add_special_tokens=False)
    )
    llm.generate([warm], SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
    start = 0
    for c in args.concurrency:
        # Each level gets its own prompts (at least c of them): the suffix
        # cache keeps earlier outputs, and identical greedy outputs would be
        # copied for free.
        level_prompts = token_prompts[start : start + level_size(args.num_prompts, c)]
        start += len(level_prompts)
        before, t0, generated = spec_counters(llm), time.perf_counter(), 0
        for i in range(0, len(level_prompts), c):  # c requests in flight at a time
            outs = llm.generate(level_prompts[i : i + c], params, use_tqdm=False)
            generated += sum(len(o.outputs[0].token_ids) for o in outs)
        wall = time.perf_counter() - t0
        after = spec_counters(llm)
        drafts = after["drafts"] - before["drafts"]
        accepted = after["accepted"] - before["accepted"]
        emit_result(
            {
                "method": args.worker,
                "concurrency": c,
                "requests": len(level_prompts),
                "generated_tokens": generated,
                "seconds": wall,
                "tokens_per_s": generated / wall,
                "mean_tokens_per_step": 1.0 + accepted / drafts if drafts else 1.0,
                "drafts": drafts,
                "accepted": accepted,
                "draft_tokens": after["draft_tokens"] - before["draft_tokens"],
            }
        )


# --------------------------------------------------------------------------- parent


def worker_cmd(method: str, args: argparse.Namespace, prompts_file: Path) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", method, "--prompts-file", str(prompts_file)]
    cmd += ["--model", args.model, "--dtype", args.dtype, "--num-prompts", str(args.num_prompts)]
    cmd += ["--k", str(args.k), "--depth", str(args.depth), "--max-tokens", str(args.max_tokens)]
    cmd += ["--max-model-len", str(args.max_model_len)]
    cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    cmd += ["--concurrency", *map(str, args.concurrency)]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.speculator:
        cmd += ["--speculator", args.speculator]
    if args.suffix_budget is not None:
        cmd += ["--suffix-budget", str(args.suffix_budget)]
    cmd += ["--async-scheduling", args.async_scheduling, "--cudagraph-mode", args.cudagraph_mode]
    return cmd


def render(results: list[dict], meta: dict[str, Any]) -> str:
    levels = sorted({r["concurrency"] for r in results})
    by = {(r["method"], r["concurrency"]): r for r in results}
    rows = []
    for m in [m for m in METHODS if any(r["method"] == m for r in results)]:
        cells: list[str] = [m]
        for c in levels:
            r, base = by.get((m, c)), by.get(("none", c))
            if r is None:
                cells.append("n/a")
                continue
            ratio = (
                f", {r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and m != "none" else ""
            )
            cells.append(f"{r['tokens_per_s']:.1f} ({r['mean_tokens_per_step']:.2f}{ratio})")
        rows.append(cells)
    lines = [
        "# vLLM: no speculation vs n-gram vs suffix decoding (arctic_inference_core)",
        "",
        f"Model: {meta['model']}, served in {meta['dtype']}. Prompts: {meta['prompts']} "
        f"({meta['num_prompts']} different requests in all, max(num_prompts, concurrency) per "
        f"level, greedy, up to {meta['max_tokens']} new tokens). k={meta['k']}, suffix depth "
        f"{meta['depth']}, n-gram n=2..5. {meta['machine']}.",
        "",
        "Output tokens/s (in brackets: mean tokens per drafted step, 1 + accepted / drafts from "
        "vLLM's counters, where steps without a draft do not count; speed-up vs none):",
        "",
        *table(["method", *(f"concurrency {c}" for c in levels)], rows),
    ]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m in [m for m in METHODS if any(r["method"] == m for r in results)]:
        rs = sorted((r for r in results if r["method"] == m), key=lambda r: r["concurrency"])
        ax.plot(
            [r["concurrency"] for r in rs], [r["tokens_per_s"] for r in rs], marker="o", label=m
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("output tokens/s")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


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
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    p.add_argument(
        "--speculator",
        help="speculator directory for the arctic methods "
        "(bench/speculator_acceptance.py trains one)",
    )
    p.add_argument("--k", type=int, default=32, help="num_speculative_tokens")
    p.add_argument("--depth", type=int, default=64, help="suffix_decoding_max_tree_depth")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.15,
        help="on CPU: share of RAM for the KV cache",
    )
    p.add_argument("--enforce-eager", action="store_true", default=None)
    p.add_argument(
        "--suffix-budget",
        type=int,
        default=None,
        help="suffix_step_token_budget for the adapter (default: the adapter's)",
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
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)  # the worker's, set by main
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if any(m.startswith("arctic") for m in args.methods) and not args.speculator:
        p.error("the arctic methods need --speculator DIR")

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
    results: list[dict] = []
    with tqdm(args.methods, desc="vLLM runs", unit="method") as bar:
        for method in bar:
            bar.set_postfix_str(method)
            log = args.out_dir / f"vllm_compare_{method}.log"
            cmd = worker_cmd(method, args, prompts_file)
            results += run_worker_process(
                method, cmd, log, worker_env(method), len(args.concurrency)
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
        "machine": "GPU" if on_gpu else "CPU, eager" if args.enforce_eager else "CPU",
    }
    md = render(results, meta)
    md_path, _ = write_results(
        args.out_dir, "vllm_compare", md, {"meta": meta, "results": results}, stamp
    )
    drew = plot(results, args.out_dir / "vllm_compare.png")
    print("\n" + stamped_markdown(md, stamp))
    print(f"wrote {md_path}, .json" + (", .png" if drew else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
