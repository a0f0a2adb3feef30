"""Time to first token of long prompts in vLLM: Ulysses sequence parallelism
against tensor parallelism and one GPU, each configuration in its own process.

    python bench/ulysses_ttft.py --shape llama-8b --configs tp1 tp2 sp2            # 2 GPUs
    python bench/ulysses_ttft.py --model ../shared/bench-lm --configs tp1 sp2 --prompt-lens 1024 4096

A configuration is ``tp<T>`` or ``sp<S>`` or ``tp<T>sp<S>`` (T x S ranks).
For each prompt length: the median over ``--repeats`` of the time one
random prompt alone takes to its first token (each prompt prefills in one
step unless ``--max-num-batched-tokens`` is smaller). Every configuration
also decodes ``--check-tokens`` greedy tokens of one prompt per length; the
report says whether they equal the first configuration's. ``--shape``
serves random weights (vLLM's ``load_format="dummy"``, timing only; SP
ranks hold the same weights as one GPU, TP ranks other random ones, so only
SP is compared token for token there). All configurations run eager, since
Ulysses does (``--compiled-tp`` gives the TP ones vLLM's default CUDA graphs).
Results: ``<out-dir>/ulysses_ttft.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.paths import RESULTS
from benchlib.shapes import SHAPES, write_llama_shape
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import median, ratio, table
from benchlib.ties import first_difference
from benchlib.worker import emit_result, run_worker_process

from arctic_inference_vllm.testing import memory_kwargs

CONFIG = re.compile(r"^(?:tp(\d+))?(?:sp(\d+))?$")


def parse_config(name: str) -> tuple[int, int]:
    """``tp2`` -> (2, 1), ``sp2`` -> (1, 2), ``tp2sp2`` -> (2, 2)."""
    m = CONFIG.match(name)
    if not name or not m or not (m.group(1) or m.group(2)):
        raise argparse.ArgumentTypeError(
            f"configuration {name!r} is not tp<T>, sp<S> or tp<T>sp<S>"
        )
    return int(m.group(1) or 1), int(m.group(2) or 1)


def run_worker(a: argparse.Namespace) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # LLM(...) accepts ulysses_sequence_parallel_size once plugins are in
    tp, sp = parse_config(a.worker)
    rng = random.Random(0)
    vocab = json.loads((Path(a.model) / "config.json").read_text())["vocab_size"]

    def prompt(n: int) -> Any:
        return TokensPrompt(prompt_token_ids=[rng.randrange(3, vocab) for _ in range(n)])

    extra: dict[str, Any] = {}
    if a.dummy:
        extra.update(load_format="dummy", skip_tokenizer_init=True)
    if sp > 1:
        extra["ulysses_sequence_parallel_size"] = sp
    longest = max(a.prompt_lens)
    llm = LLM(
        model=a.model,
        tensor_parallel_size=tp,
        max_model_len=longest + a.check_tokens + 16,
        enforce_eager=not (a.compiled_tp and sp == 1),
        enable_prefix_caching=False,
        **memory_kwargs(a.model, 8 * (longest + a.check_tokens + 16), a.gpu_memory_utilization),
        seed=0,
        max_num_batched_tokens=a.max_num_batched_tokens or longest,
        max_num_seqs=8,
        **extra,
    )
    params = dict(ignore_eos=True, detokenize=not a.dummy, temperature=0.0)
    out: dict[str, Any] = {"config": a.worker, "tp": tp, "sp": sp, "ttft_ms": {}, "tokens": {}}
    for n in a.prompt_lens:
        check = prompt(n)
        llm.generate([prompt(n)], SamplingParams(max_tokens=1, **params), use_tqdm=False)  # warm
        times = []
        for _ in range(a.repeats):
            p = prompt(n)
            t0 = time.perf_counter()
            llm.generate([p], SamplingParams(max_tokens=1, **params), use_tqdm=False)
            times.append(time.perf_counter() - t0)
        out["ttft_ms"][str(n)] = 1000 * median(times)
        (res,) = llm.generate(
            [check], SamplingParams(max_tokens=a.check_tokens, **params), use_tqdm=False
        )
        out["tokens"][str(n)] = list(res.outputs[0].token_ids)
    emit_result(out)


def report(a: argparse.Namespace, rows: list[dict], source: str) -> str:
    base = rows[0]
    lens = [str(n) for n in a.prompt_lens]
    lines = [
        f"# Time to first token with Ulysses sequence parallelism ({a.device_name or 'CPU'})",
        "",
        f"{source}; one random prompt at a time, median of {a.repeats}; eager"
        f"{' except TP (compiled, CUDA graphs)' if a.compiled_tp else ''}. "
        f"Greedy: the first {a.check_tokens} tokens of one prompt per length against "
        f"`{base['config']}` (identical, or the first position that differs).",
    ]
    header = ["config", "ranks"]
    for n in lens:
        header += [f"TTFT {n} (ms)", f"vs {base['config']}"]
    cells = []
    for r in rows:
        row = [r["config"], str(r["tp"] * r["sp"])]
        for n in lens:
            row += [f"{r['ttft_ms'][n]:.1f}", ratio(base["ttft_ms"][n], r["ttft_ms"][n])]
        diffs = {n: first_difference(r["tokens"][n], base["tokens"][n]) for n in lens}
        row.append(
            "identical"
            if all(d is None for d in diffs.values())
            else ", ".join(f"{n}: differs at {d}" for n, d in diffs.items() if d is not None)
        )
        cells.append(row)
    lines += ["", *table([*header, "greedy"], cells, "lr" + "rr" * len(lens) + "l")]
    lines += ["", f"`vs {base['config']}`: its TTFT divided by the row's (above 1: faster)."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="Hugging Face model directory")
    src.add_argument(
        "--shape", choices=sorted(SHAPES), help="random weights of this shape (timing only)"
    )
    p.add_argument(
        "--configs",
        nargs="+",
        default=["tp1", "tp2", "sp2"],
        help="tp<T>, sp<S> or tp<T>sp<S>; the first is the reference",
    )
    p.add_argument("--prompt-lens", type=int, nargs="+", default=[8192, 16384, 32768])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check-tokens", type=int, default=32)
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="default: the longest prompt (one prefill step per prompt)",
    )
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument(
        "--compiled-tp",
        action="store_true",
        help="TP configurations with vLLM's default compilation and CUDA graphs",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dummy", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0
    for c in a.configs:
        parse_config(c)
    import torch

    a.device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    a.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = version_stamp()
    model = write_llama_shape(a.shape, a.out_dir) if a.shape else Path(a.model)
    source = (
        f"Llama of {a.shape} shape, random weights (timing only)" if a.shape else f"`{a.model}`"
    )
    rows: list[dict] = []
    for name in a.configs:
        tp, sp = parse_config(name)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--model",
            str(model),
            "--prompt-lens",
            *map(str, a.prompt_lens),
            "--repeats",
            str(a.repeats),
            "--check-tokens",
            str(a.check_tokens),
            "--gpu-memory-utilization",
            str(a.gpu_memory_utilization),
        ]
        cmd += ["--dummy"] * bool(a.shape) + ["--compiled-tp"] * a.compiled_tp
        if a.max_num_batched_tokens:
            cmd += ["--max-num-batched-tokens", str(a.max_num_batched_tokens)]
        env = dict(os.environ, ARCTIC_INFERENCE_VLLM_EXTRAS="1")
        if a.device_name is None:  # every configuration on the same cores
            from arctic_inference_vllm.testing import cpu_binding

            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_binding(tp * sp))
        rows += run_worker_process(name, cmd, a.out_dir / f"ulysses_ttft_{name}.log", env, 1)
        md = report(a, rows, source)  # after each configuration: a cut-short run keeps its rows
        write_results(a.out_dir, "ulysses_ttft", md, {"rows": rows}, stamp, 1)
    print(stamped_markdown(md, stamp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
