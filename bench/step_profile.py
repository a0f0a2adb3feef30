"""Where an engine step's time goes, with and without speculation.

Runs vLLM in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and wraps the
engine-core phases with wall-clock timers: scheduling, input preparation and
the model's launch (``execute_model``), sampling plus the wait for the GPU
and the drafter (``sample_tokens``; the drafter alone is
``propose_draft_token_ids``), and output bookkeeping
(``update_from_output``). Each method runs in its own process on the same
prompts, one request at a time by default (concurrency 1 is where per-step
overhead decides the speed-up).

    python bench/step_profile.py --methods none ngram suffix --cudagraph-mode FULL

Model and prompts as in ``bench/vllm_compare.py``: the shipped bench-lm
(on CPU in ``cpu_dtype()``) and the shipped agentic prompts, unless
``--model`` / ``--prompts`` say otherwise.

Results: ``<out-dir>/step_profile.{md,json}``: mean milliseconds per engine
step for each phase, tokens per step and output tokens per second.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.assets import agentic_prompts_path, model_to_serve
from benchlib.engine import (
    METHODS,
    POLICY_METHODS,
    build_engine,
    load_prompts,
    spec_counters,
    worker_env,
)
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import table
from benchlib.worker import emit_result, run_worker_process

PHASES = (
    ("step", "vllm.v1.engine.core", "EngineCore", "step"),
    ("step", "vllm.v1.engine.core", "EngineCore", "step_with_batch_queue"),  # async scheduling
    ("schedule", "vllm.v1.core.sched.scheduler", "Scheduler", "schedule"),
    ("execute_model", "vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "execute_model"),
    ("sample_tokens", "vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "sample_tokens"),
    ("propose", "vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "propose_draft_token_ids"),
    ("update_from_output", "vllm.v1.core.sched.scheduler", "Scheduler", "update_from_output"),
)


def install_timers(
    totals: dict[str, float], counts: dict[str, int], steps: list[tuple[int, float]]
) -> None:
    """Wrap the phases with timers; ``steps`` gets each engine step's
    scheduled tokens and wall seconds (the step's cost curve)."""
    import importlib

    scheduled = [0]

    for name, module, cls_name, attr in PHASES:
        cls = getattr(importlib.import_module(module), cls_name)
        orig = getattr(cls, attr)

        @functools.wraps(orig)  # keeps the signature that patches check
        def timed(*a: Any, _orig=orig, _name=name, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = None
            try:
                out = _orig(*a, **kw)
                return out
            finally:
                dt = time.perf_counter() - t0
                totals[_name] += dt
                counts[_name] += 1
                if _name == "schedule":
                    scheduled[0] = int(getattr(out, "total_num_scheduled_tokens", 0) or 0)
                elif _name == "step" and scheduled[0]:
                    steps.append((scheduled[0], dt))
                    scheduled[0] = 0

        setattr(cls, attr, timed)


def run_worker(a: argparse.Namespace) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in this process
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    steps: list[tuple[int, float]] = []
    install_timers(totals, counts, steps)
    from vllm import SamplingParams

    llm, _, reqs = build_engine(a)
    params = SamplingParams(temperature=0.0, max_tokens=a.max_tokens)
    llm.generate(
        reqs[:1], SamplingParams(temperature=0.0, max_tokens=16), use_tqdm=False
    )  # warm-up
    totals.clear()
    counts.clear()
    steps.clear()
    before = spec_counters(llm)
    t0, generated = time.perf_counter(), 0
    for i in range(0, len(reqs), a.concurrency):
        outs = llm.generate(reqs[i : i + a.concurrency], params, use_tqdm=False)
        generated += sum(len(o.outputs[0].token_ids) for o in outs)
    wall = time.perf_counter() - t0
    n = max(counts["step"], 1)
    after = spec_counters(llm)
    result: dict[str, Any] = {
        "method": a.worker,
        "steps": counts["step"],
        "generated_tokens": generated,
        "seconds": wall,
        "tokens_per_s": generated / wall,
        "tokens_per_step": generated / n,
        "ms_per_step": {k: 1e3 * v / n for k, v in totals.items()},
        "wall_ms_per_step": 1e3 * wall / n,
        "step_sizes": size_table(steps),
        "draft_tokens": after["draft_tokens"] - before["draft_tokens"],
        "accepted": after["accepted"] - before["accepted"],
    }
    if a.worker in POLICY_METHODS:
        (result["policy"],) = llm.collective_rpc("draft_policy_state")
    emit_result(result)


SIZE_BINS = (1, 2, 4, 8, 16, 32, 33, 64, 128, 256, 512, 1024, 1 << 30)


def size_table(steps: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """Engine steps binned by scheduled tokens: count and median ms."""
    out = []
    lo = 1
    for hi in SIZE_BINS:
        ts = sorted(dt for tok, dt in steps if lo <= tok <= hi)
        if ts:
            out.append(
                {
                    "tokens": f"{lo}-{hi}" if hi > lo else str(lo),
                    "steps": len(ts),
                    "median_ms": 1e3 * ts[len(ts) // 2],
                }
            )
        lo = hi + 1
    return out


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    names = list(dict.fromkeys(p[0] for p in PHASES))
    out = [
        f"# Engine step profile ({meta['machine']})",
        "",
        f"Model {meta['model']}, served in {meta['dtype']}; {meta['requests']} requests at "
        f"concurrency {meta['concurrency']}, up to {meta['max_tokens']} new tokens, k={meta['k']}, "
        f"cudagraph mode {meta['cudagraph_mode']}. Milliseconds per engine step (wall clock, "
        "engine-core process); `sample_tokens` includes waiting for the GPU and the drafter "
        "(`propose`).",
        "",
        *table(
            ["method", "tok/s", "tokens/step", "wall/step", *names],
            [
                [
                    r["method"],
                    f"{r['tokens_per_s']:.0f}",
                    f"{r['tokens_per_step']:.2f}",
                    f"{r['wall_ms_per_step']:.3f}",
                    *(f"{r['ms_per_step'].get(n, 0.0):.3f}" for n in names),
                ]
                for r in rows
            ],
        ),
    ]
    for r in rows:
        if r.get("step_sizes"):
            out += ["", f"`{r['method']}`: engine steps by scheduled tokens", ""]
            out += table(
                ["tokens", "steps", "median ms"],
                [[b["tokens"], b["steps"], f"{b['median_ms']:.2f}"] for b in r["step_sizes"]],
            )
        if r.get("policy"):
            out += ["", f"`{r['method']}`: draft policy choices {r['policy'].get('kinds')}"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="model directory (default: the shipped bench-lm)")
    p.add_argument(
        "--prompts",
        "--traces",
        dest="prompts",
        help="JSON lines with 'prompt' and 'family' (default: bench/assets/agentic-prompts.jsonl)",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["none", "ngram", "suffix"])
    p.add_argument("--speculator", help="speculator directory for the arctic methods")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    p.add_argument("--enforce-eager", action="store_true", default=None)
    p.add_argument("--cudagraph-mode", default="default")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)  # the worker's, set by main
    a = p.parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0
    import json

    import torch

    a.out_dir.mkdir(parents=True, exist_ok=True)
    on_gpu = torch.cuda.is_available()
    if a.enforce_eager is None:
        a.enforce_eager = not on_gpu
    a.model, model_desc, a.dtype = model_to_serve(a.model, on_gpu)
    prompts, _ = load_prompts(a.prompts or str(agentic_prompts_path()), a.num_prompts)
    pf = a.out_dir / "step_profile_prompts.json"
    pf.write_text(json.dumps(prompts))
    stamp = version_stamp()
    rows = []
    for m in a.methods:
        cmd = [sys.executable, __file__, "--worker", m, "--prompts-file", str(pf)]
        cmd += ["--model", a.model, "--dtype", a.dtype, "--concurrency", str(a.concurrency)]
        cmd += ["--k", str(a.k), "--depth", str(a.depth), "--max-tokens", str(a.max_tokens)]
        cmd += ["--max-model-len", str(a.max_model_len)]
        cmd += ["--gpu-memory-utilization", str(a.gpu_memory_utilization)]
        cmd += ["--cudagraph-mode", a.cudagraph_mode]
        if a.enforce_eager:
            cmd.append("--enforce-eager")
        if a.speculator:
            cmd += ["--speculator", a.speculator]
        log = a.out_dir / f"step_profile_{m}.log"
        rows += run_worker_process(m, cmd, log, worker_env(m), 1)
    meta = {
        "model": model_desc,
        "dtype": a.dtype if a.dtype != "auto" else "the model's dtype",
        "requests": len(prompts),
        "concurrency": a.concurrency,
        "max_tokens": a.max_tokens,
        "k": a.k,
        "cudagraph_mode": a.cudagraph_mode,
        "machine": "GPU" if on_gpu else "CPU, eager" if a.enforce_eager else "CPU",
    }
    md = render(rows, meta)
    write_results(a.out_dir, "step_profile", md, {"meta": meta, "rows": rows}, stamp, 1)
    print(stamped_markdown(md, stamp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
