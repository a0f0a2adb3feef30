"""Shift parallelism against TP and Ulysses SP alone on mixed traffic: long
prompts, short answers, several concurrencies; each configuration in its own
process (one engine each, on the same ranks).

    python bench/shift_parallel.py --shape llama-8b --ranks 2 --prompt-len 8192 --output-len 128 \\
        --concurrency 1 4 16 --threshold 512                                     # 2 GPUs
    python bench/shift_parallel.py                          # CPU mechanics: bench-lm, small sizes

Configurations (``--configs``, over ``--ranks`` N ranks):

* ``tp``: tensor parallelism over N ranks (vLLM alone);
* ``sp``: Ulysses SP = N / ``--sp-tp`` x TP = ``--sp-tp``, eager;
* ``shift``: the same with ``--enable-shift-parallel`` and
  ``--shift-parallel-threshold``: steps of at most the threshold's scheduled
  tokens run the TP path, larger ones the SP path.

Traffic: ``--concurrency`` C closed-loop users, each sending
``--requests-per-user`` requests one after the other (prompts of
``--prompt-len`` random tokens, +-25%, answers of ``--output-len`` tokens,
greedy, end of sequence ignored), streamed through vLLM's ``AsyncLLM`` in
the worker process. Per request: time to first token (TTFT) and time per
output token after the first (TPOT); per concurrency: their p50 and p99 (the
nearest-rank percentile: with few requests p99 is the slowest) and output
tokens/s over the level's wall time. ``shift`` also reports how many engine
steps ran each path. With ``--model`` every configuration also decodes one
prompt greedily, compared with the first configuration (``--shape`` serves
random weights, which TP and SP shard differently: timing only).

On CPU (no GPU visible) the configurations run eager on the same cores and
the default sizes are small: the numbers are the mechanics and ratios on a
shared machine, not the GPU effect (more ranks bring no more compute there).
Results: ``<out-dir>/shift_parallel.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.paths import RESULTS
from benchlib.shapes import SHAPES, write_llama_shape
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import fmt, ratio, table
from benchlib.worker import emit_result, run_worker_process

from arctic_inference_vllm.testing import memory_kwargs

CONFIGS = ("tp", "sp", "shift")
INSPECTOR = "arctic_inference_vllm.diagnostics.ShiftInspector"


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``xs``; NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def engine_kwargs(a: argparse.Namespace, config: str) -> dict[str, Any]:
    """The engine arguments of one configuration."""
    kw: dict[str, Any] = dict(
        model=a.model,
        max_model_len=int(a.prompt_len * 1.25) + a.output_len + 16,
        max_num_batched_tokens=a.max_num_batched_tokens,
        max_num_seqs=max(a.concurrency),
        enable_prefix_caching=False,
        **memory_kwargs(
            a.model,
            max(a.concurrency) * (int(a.prompt_len * 1.25) + a.output_len + 16),
            a.gpu_memory_utilization,
        ),
        enforce_eager=a.enforce_eager,
        seed=0,
        dtype=a.dtype,
        disable_log_stats=True,
    )
    if a.dummy:
        kw.update(load_format="dummy", skip_tokenizer_init=True)
    if config == "tp":
        kw["tensor_parallel_size"] = a.ranks
    else:
        kw["tensor_parallel_size"] = a.sp_tp
        kw["ulysses_sequence_parallel_size"] = a.ranks // a.sp_tp
    if config == "shift":
        kw.update(
            enable_shift_parallel=True,
            shift_parallel_threshold=a.threshold,
            worker_extension_cls=INSPECTOR,
        )
    return kw


async def _serve(a: argparse.Namespace, config: str) -> dict[str, Any]:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(a, config)))
    rng = random.Random(0)
    vocab = a.vocab_size
    ids = 0

    def prompt(n: int | None = None) -> Any:
        n = n or rng.randint(int(a.prompt_len * 0.75), int(a.prompt_len * 1.25))
        return TokensPrompt(prompt_token_ids=[rng.randrange(3, vocab) for _ in range(n)])

    params = SamplingParams(
        max_tokens=a.output_len,
        temperature=0.0,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )

    async def one(p: Any) -> dict[str, Any]:
        nonlocal ids
        ids += 1
        t0 = time.perf_counter()
        first = last = None
        tokens: list[int] = []
        async for out in engine.generate(p, params, f"r{ids}"):
            now = time.perf_counter()
            if out.outputs[0].token_ids:
                first = first or now
                last = now
                tokens += out.outputs[0].token_ids
        assert first is not None and last is not None
        n = len(tokens)
        return {
            "ttft": first - t0,
            "tpot": (last - first) / (n - 1) if n > 1 else float("nan"),
            "tokens": tokens,
        }

    try:
        check = await one(prompt(a.prompt_len)) if not a.dummy else None
        await one(prompt())  # warm
        if config == "shift":
            before = await engine.collective_rpc("shift_path_counts")
        levels = []
        for c in a.concurrency:
            prompts = [[prompt() for _ in range(a.requests_per_user)] for _ in range(c)]

            async def user(ps: list[Any]) -> list[dict[str, Any]]:
                return [await one(p) for p in ps]

            t0 = time.perf_counter()
            done = await asyncio.gather(*(user(ps) for ps in prompts))
            wall = time.perf_counter() - t0
            reqs = [r for rs in done for r in rs]
            ttft = [r["ttft"] for r in reqs]
            tpot = [r["tpot"] for r in reqs if r["tpot"] == r["tpot"]]
            levels.append(
                {
                    "concurrency": c,
                    "requests": len(reqs),
                    "ttft_p50_ms": 1000 * percentile(ttft, 50),
                    "ttft_p99_ms": 1000 * percentile(ttft, 99),
                    "tpot_p50_ms": 1000 * percentile(tpot, 50),
                    "tpot_p99_ms": 1000 * percentile(tpot, 99),
                    "output_tokens_per_s": sum(len(r["tokens"]) for r in reqs) / wall,
                    "requests_per_s": len(reqs) / wall,
                }
            )
        result: dict[str, Any] = {
            "config": config,
            "levels": levels,
            "check_tokens": None if check is None else check["tokens"],
        }
        if config == "shift":
            after = await engine.collective_rpc("shift_path_counts")
            result["steps"] = {k: after[0][k] - before[0][k] for k in after[0]}
            result["weight_bytes"] = (await engine.collective_rpc("shift_weight_bytes"))[0]
        return result
    finally:
        engine.shutdown()


def run_worker(a: argparse.Namespace) -> None:
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # the Ulysses and shift keywords, once plugins are in
    emit_result(asyncio.run(_serve(a, a.worker)))


# --------------------------------------------------------------------------- parent


def report(a: argparse.Namespace, rows: list[dict], source: str) -> str:
    base = rows[0]
    sp = a.ranks // a.sp_tp
    lines = [
        f"# Shift parallelism on mixed traffic ({a.device_name or 'CPU'}, {a.ranks} ranks)",
        "",
        f"{source}; prompts of {a.prompt_len} +-25% random tokens, {a.output_len}-token "
        f"greedy answers, {a.requests_per_user} requests per user; max_num_batched_tokens "
        f"{a.max_num_batched_tokens}; `tp` = TP {a.ranks}, `sp` = SP {sp} x TP {a.sp_tp}, "
        f"`shift` = the same with threshold {a.threshold}; "
        f"{'eager' if a.enforce_eager else 'TP paths compiled with CUDA graphs, SP eager'}.",
        "",
    ]
    header = ["config", "users", "TTFT p50", "p99", "TPOT p50", "p99", "out tok/s", "vs tp"]
    cells = []
    for r in rows:
        for lv in r["levels"]:
            ref = next(x for x in base["levels"] if x["concurrency"] == lv["concurrency"])
            cells.append(
                [
                    r["config"],
                    lv["concurrency"],
                    fmt(lv["ttft_p50_ms"], 1),
                    fmt(lv["ttft_p99_ms"], 1),
                    fmt(lv["tpot_p50_ms"], 1),
                    fmt(lv["tpot_p99_ms"], 1),
                    fmt(lv["output_tokens_per_s"], 1),
                    ratio(lv["output_tokens_per_s"], ref["output_tokens_per_s"]),
                ]
            )
    lines += table(header, cells)
    lines += [
        "",
        f"Times in ms. `vs {base['config']}`: output tokens/s over {base['config']}'s "
        "(above 1: more).",
    ]
    for r in rows:
        if "steps" in r:
            w = r["weight_bytes"]
            lines.append(
                f"`{r['config']}` steps: {r['steps']['tp']} on the TP path, "
                f"{r['steps']['sp']} on the SP path. Weights per rank: SP model "
                f"{w['sp'] / 2**20:.1f} MiB, TP model {w['tp'] / 2**20:.1f} MiB (the extra "
                f"memory over `sp`: {w['tp'] / w['sp']:.2f}x the SP model's)."
            )
    if base.get("check_tokens") is not None:
        groups: list[list[str]] = []
        for r in rows:
            g = next((g for g in groups if _tokens(rows, g[0]) == r["check_tokens"]), None)
            (g.append(r["config"]) if g else groups.append([r["config"]]))
        lines.append(
            f"Greedy tokens of one {a.prompt_len}-token prompt, configurations that agree: "
            + "; ".join(" = ".join(g) for g in groups)
            + (
                "."
                if len(groups) == 1
                else " (reductions in another order, in bf16, can flip "
                "near-ties between TP and SP)."
            )
        )
    return "\n".join(lines) + "\n"


def _tokens(rows: list[dict], config: str) -> Any:
    return next(r["check_tokens"] for r in rows if r["config"] == config)


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("ttft_p50_ms", "TTFT p50 (ms)"),
        ("tpot_p50_ms", "TPOT p50 (ms)"),
        ("output_tokens_per_s", "output tokens/s"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.5))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for r in rows:
            xs = [lv["concurrency"] for lv in r["levels"]]
            ax.plot(xs, [lv[key] for lv in r["levels"]], marker="o", label=r["config"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="Hugging Face model directory (default: bench-lm)")
    src.add_argument(
        "--shape", choices=sorted(SHAPES), help="random weights of this shape (timing only)"
    )
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    p.add_argument("--ranks", type=int, default=2, help="GPUs (CPU: worker processes)")
    p.add_argument("--sp-tp", type=int, default=1, help="TP inside sp and shift (SP = ranks/it)")
    p.add_argument("--threshold", type=int, default=None, help="default 512 (CPU: 64)")
    p.add_argument("--concurrency", type=int, nargs="+", default=None)
    p.add_argument("--requests-per-user", type=int, default=None)
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--output-len", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="eager everywhere (default on CPU; on GPU tp and shift's TP path use CUDA graphs)",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dummy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--device-name", help=argparse.SUPPRESS)
    return p


# GPU defaults, CPU defaults (mechanics on 2 shared cores)
DEFAULTS = {
    "threshold": (512, 64),
    "concurrency": ([1, 4, 16], [1, 4]),
    "requests_per_user": (4, 2),
    "prompt_len": (8192, 512),
    "output_len": (128, 16),
    "max_num_batched_tokens": (8192, 512),
    "gpu_memory_utilization": (0.85, 0.1),
    "enforce_eager": (False, True),
}


def worker_argv(a: argparse.Namespace, name: str) -> list[str]:
    argv = [sys.executable, __file__, "--worker", name, "--model", str(a.model)]
    for key in ("ranks", "sp_tp", "threshold", "requests_per_user", "prompt_len", "output_len"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
    argv += ["--max-num-batched-tokens", str(a.max_num_batched_tokens)]
    argv += ["--gpu-memory-utilization", str(a.gpu_memory_utilization)]
    argv += ["--concurrency", *map(str, a.concurrency), "--vocab-size", str(a.vocab_size)]
    argv += ["--dtype", a.dtype, "--enforce-eager" if a.enforce_eager else "--no-enforce-eager"]
    return argv + ["--dummy"] * a.dummy


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0
    import json

    import torch

    on_gpu = torch.cuda.is_available()
    a.device_name = torch.cuda.get_device_name() if on_gpu else None
    for key, (gpu, cpu) in DEFAULTS.items():
        if getattr(a, key) is None:
            setattr(a, key, gpu if on_gpu else cpu)
    if a.ranks % a.sp_tp or a.ranks // a.sp_tp < 2:
        raise SystemExit(f"--ranks {a.ranks} is not SP x {a.sp_tp} with SP >= 2")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = version_stamp()
    a.dummy = bool(a.shape)
    if a.shape:
        a.model, source = write_llama_shape(a.shape, a.out_dir), f"Llama of {a.shape} shape"
        source += ", random weights (timing only)"
    else:
        from benchlib.assets import model_to_serve

        a.model, source, a.dtype = model_to_serve(a.model, on_gpu)
        source = f"{source}, {a.dtype}"
    a.vocab_size = json.loads((Path(a.model) / "config.json").read_text())["vocab_size"]
    rows: list[dict] = []
    for name in a.configs:
        env = dict(os.environ, ARCTIC_INFERENCE_VLLM_EXTRAS="1")
        if not on_gpu:  # every configuration on the same cores
            from arctic_inference_vllm.testing import cpu_binding

            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_binding(a.ranks))
        log = a.out_dir / f"shift_parallel_{name}.log"
        rows += run_worker_process(name, worker_argv(a, name), log, env, 1)
        md = report(a, rows, source)  # after each configuration: a cut-short run keeps its rows
        write_results(a.out_dir, "shift_parallel", md, {"rows": rows, "args": _args(a)}, stamp, 1)
    if plot(rows, a.out_dir / "shift_parallel.png"):
        md += f"\nPlot: {a.out_dir / 'shift_parallel.png'}\n"
    print(stamped_markdown(md, stamp))
    return 0


def _args(a: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}


if __name__ == "__main__":
    raise SystemExit(main())
