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
Model: ../shared/bench-lm when present, else a tiny random Llama built on
the fly (then the numbers only show the mechanics). Prompts: the agentic
traces in ../shared/bench-data when present, else synthetic ones
(bench/make_traces.py); each concurrency level gets its own prompts, so the
suffix cache cannot replay an earlier level's outputs. Results:
<out-dir>/vllm_compare.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCH_LM = SHARED / "bench-lm"
TRACES = SHARED / "bench-data" / "agentic-requests.jsonl"
METHODS = ("none", "ngram", "suffix", "arctic", "arctic+suffix")
DEFAULT_METHODS = ("none", "ngram", "suffix")  # arctic ones need --speculator


# --------------------------------------------------------------------------- inputs


def resolve_model(arg: str | None, out_dir: Path) -> tuple[str, str]:
    """(path, description) of the model to serve."""
    if arg:
        return arg, arg
    if (BENCH_LM / "config.json").is_file():
        return str(BENCH_LM), "bench-lm (27M-parameter code model, ../shared/bench-lm)"
    from arctic_inference_vllm.testing import build_tiny_llama

    path = out_dir / "tiny-llama"
    if not (path / "config.json").is_file():
        build_tiny_llama(path)
    return str(path), "tiny random Llama built on the fly (no ../shared/bench-lm)"


def load_prompts(traces: str | None, n: int) -> tuple[list[str], str]:
    if traces:
        path = Path(traces)
    elif TRACES.is_file():
        path = TRACES
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from make_traces import generate

        rows = generate(max(n, 12), seed=0)
        return [r["prompt"] for r in rows if r["family"] != "new_file"][
            :n
        ], "synthetic stdlib traces"
    rows = [json.loads(line) for line in path.open()]
    # Held-out-looking slice from the end, mixing the edit families.
    picked = [r["prompt"] for r in reversed(rows) if r["family"] in ("edit_file", "edit_diff")]
    return picked[:n], str(path)


def level_size(num_prompts: int, concurrency: int) -> int:
    return max(num_prompts, concurrency)


def spec_config(
    method: str, k: int, depth: int, speculator: str | None = None
) -> dict[str, Any] | None:
    if method == "none":
        return None
    if method == "ngram":
        return {
            "method": "ngram",
            "num_speculative_tokens": k,
            "prompt_lookup_min": 2,
            "prompt_lookup_max": 5,
        }
    if method.startswith("arctic"):
        # the speculator drafts its n_predict tokens; with suffix, suffix
        # drafts (up to k) win when their score says they will be accepted
        with_suffix = method == "arctic+suffix"
        n_predict = json.loads((Path(speculator) / "config.json").read_text())["n_predict"]
        return {
            "method": "arctic",
            "model": speculator,
            "enable_suffix_decoding": with_suffix,
            "num_speculative_tokens": k if with_suffix else n_predict,
            "suffix_decoding_max_tree_depth": depth,
        }
    return {
        "method": "suffix",
        "num_speculative_tokens": k,
        "suffix_decoding_max_tree_depth": depth,
    }


# --------------------------------------------------------------------------- worker


def spec_counters(llm: Any) -> dict[str, float]:
    out = {"drafts": 0.0, "accepted": 0.0, "draft_tokens": 0.0}
    names = {
        "vllm:spec_decode_num_drafts": "drafts",
        "vllm:spec_decode_num_accepted_tokens": "accepted",
        "vllm:spec_decode_num_draft_tokens": "draft_tokens",
    }
    for m in llm.get_metrics():
        if m.name in names and hasattr(m, "value"):
            out[names[m.name]] += m.value
    return out


def build_engine(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """The engine for ``args.worker`` (a method), its tokenizer, and the
    prompts of ``args.prompts_file`` as token prompts that leave room for
    ``max_tokens``."""
    from transformers import AutoTokenizer
    from vllm import LLM, TokensPrompt

    prompts = json.loads(Path(args.prompts_file).read_text())
    tok = AutoTokenizer.from_pretrained(args.model)
    room = args.max_model_len - args.max_tokens - 1
    token_prompts = [
        TokensPrompt(
            prompt_token_ids=([tok.bos_token_id or 0] + tok.encode(p, add_special_tokens=False))[
                -room:
            ]
        )
        for p in prompts
    ]
    extra: dict[str, Any] = {}
    if getattr(args, "suffix_budget", None) is not None:
        extra["additional_config"] = {
            "arctic_inference": {"suffix_step_token_budget": args.suffix_budget}
        }
    if getattr(args, "async_scheduling", "default") != "default":
        extra["async_scheduling"] = args.async_scheduling == "on"
    if args.cudagraph_mode != "default":
        extra["compilation_config"] = {"cudagraph_mode": args.cudagraph_mode}
    llm = LLM(
        model=args.model,
        speculative_config=spec_config(args.worker, args.k, args.depth, args.speculator),
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=bool(args.enforce_eager),
        disable_log_stats=False,
        seed=0,
        **extra,
    )
    return llm, tok, token_prompts


def run_worker(args: argparse.Namespace) -> None:
    """One method, all concurrency levels; prints one JSON line per level."""
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
        batches = [level_prompts[i : i + c] for i in range(0, len(level_prompts), c)]
        for batch in batches:  # c requests in flight at a time
            outs = llm.generate(batch, params, use_tqdm=False)
            generated += sum(len(o.outputs[0].token_ids) for o in outs)
        wall = time.perf_counter() - t0
        after = spec_counters(llm)
        drafts = after["drafts"] - before["drafts"]
        accepted = after["accepted"] - before["accepted"]
        print(
            "RESULT "
            + json.dumps(
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
            ),
            flush=True,
        )


# --------------------------------------------------------------------------- parent


def run_worker_process(
    name: str, cmd: list[str], log: Path, env: dict[str, str], expect: int
) -> list[dict]:
    """Run a benchmark worker (stderr to ``log``); its ``RESULT {json}`` lines,
    which must number ``expect``."""
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    results = [
        json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")
    ]
    if proc.returncode != 0 or len(results) != expect:
        raise SystemExit(f"{name} run failed (exit {proc.returncode}); see {log}")
    return results


def run_method(method: str, args: argparse.Namespace, prompts_file: Path, log: Path) -> list[dict]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--prompts-file",
        str(prompts_file),
        "--model",
        args.model,
        "--num-prompts",
        str(args.num_prompts),
        "--k",
        str(args.k),
        "--depth",
        str(args.depth),
        "--max-tokens",
        str(args.max_tokens),
        "--max-model-len",
        str(args.max_model_len),
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--concurrency",
        *map(str, args.concurrency),
    ]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.speculator:
        cmd += ["--speculator", args.speculator]
    if args.suffix_budget is not None:
        cmd += ["--suffix-budget", str(args.suffix_budget)]
    cmd += ["--async-scheduling", args.async_scheduling, "--cudagraph-mode", args.cudagraph_mode]
    env = dict(os.environ)
    if method.startswith("arctic"):
        env["ARCTIC_INFERENCE_VLLM_EXTRAS"] = "1"  # the arctic method is an opt-in extra
    return run_worker_process(method, cmd, log, env, len(args.concurrency))


def render(results: list[dict], meta: dict[str, Any]) -> str:
    levels = sorted({r["concurrency"] for r in results})
    by = {(r["method"], r["concurrency"]): r for r in results}
    lines = [
        "# vLLM: no speculation vs n-gram vs suffix decoding (arctic_inference_core)",
        "",
        f"Model: {meta['model']}. Prompts: {meta['prompts']} ({meta['num_prompts']} different "
        f"requests in all, max(num_prompts, concurrency) per level, "
        f"greedy, up to {meta['max_tokens']} new tokens). k={meta['k']}, suffix depth "
        f"{meta['depth']}, n-gram n=2..5. vLLM {meta['vllm']}, {meta['machine']}.",
        "",
        "Output tokens/s (in brackets: mean tokens per drafted step, 1 + accepted / drafts from "
        "vLLM's counters, where steps without a draft do not count; speed-up vs none):",
        "",
        "| method | " + " | ".join(f"concurrency {c}" for c in levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    for m in [m for m in METHODS if any(r["method"] == m for r in results)]:
        cells = []
        for c in levels:
            r, base = by.get((m, c)), by.get(("none", c))
            if r is None:
                cells.append("n/a")
                continue
            ratio = (
                f", {r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and m != "none" else ""
            )
            cells.append(f"{r['tokens_per_s']:.1f} ({r['mean_tokens_per_step']:.2f}{ratio})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", help="model path (default: ../shared/bench-lm, else a tiny built model)"
    )
    p.add_argument(
        "--traces",
        help="JSON lines with a 'prompt' field (default: ../shared traces, else synthetic)",
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
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    if any(m.startswith("arctic") for m in args.methods) and not args.speculator:
        p.error("the arctic methods need --speculator DIR")

    import vllm
    from tqdm import tqdm

    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.model, model_desc = resolve_model(args.model, args.out_dir)
    config = json.loads((Path(args.model) / "config.json").read_text())
    args.max_model_len = min(
        args.max_model_len, config.get("max_position_embeddings", args.max_model_len)
    )
    total = sum(level_size(args.num_prompts, c) for c in args.concurrency)
    prompts, prompts_desc = load_prompts(args.traces, total)
    if args.enforce_eager is None:  # CPU: skip compilation; GPU: use CUDA graphs
        import torch

        args.enforce_eager = not torch.cuda.is_available()
    prompts_file = args.out_dir / "vllm_compare_prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    results: list[dict] = []
    with tqdm(args.methods, desc="vLLM runs", unit="method") as bar:
        for method in bar:
            bar.set_postfix_str(method)
            results += run_method(
                method, args, prompts_file, args.out_dir / f"vllm_compare_{method}.log"
            )
    meta = {
        "model": model_desc,
        "prompts": prompts_desc,
        "num_prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "k": args.k,
        "depth": args.depth,
        "vllm": vllm.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
        + (", GPU" if not args.enforce_eager else ""),
    }
    table = render(results, meta)
    (args.out_dir / "vllm_compare.md").write_text(table)
    (args.out_dir / "vllm_compare.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    drew = plot(results, args.out_dir / "vllm_compare.png")
    print("\n" + table)
    print(f"wrote {args.out_dir / 'vllm_compare.md'}, .json" + (", .png" if drew else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
