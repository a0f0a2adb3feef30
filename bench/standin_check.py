"""Check the 8B-cost stand-in (bench/standin) against what it stands in for.

    pip install -e bench/standin        # its vLLM plugin (benchmark apparatus, not product)
    python bench/standin_check.py       # one GPU

Three configurations, each in its own process (default vLLM settings, CUDA
graphs on):

- ``base``: the small model itself (default: the shipped bench-lm);
- ``standin``: the base plus a heavy stack of Llama-3.1-8B's shape (its
  tokens, an 8B's step cost);
- ``llama-8b``: a Llama-3.1-8B shape with random weights (vLLM's
  ``load_format="dummy"``, timing only).

Reported: time per decode step at each ``--batch-sizes`` (uniform decode:
``B`` requests of ``--prompt-len`` random tokens, the time of
``1 + --steps`` tokens minus the time of 1, divided by ``--steps``; median
of ``--repeats``), the time of one ``--prefill-tokens`` prefill step, and
whether the stand-in's greedy tokens equal the base's on the shipped agentic
prompts. Target: stand-in step times within 10% of the Llama-8B's.
Results: ``<out-dir>/standin_check.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.assets import agentic_prompts_path, model_to_serve
from benchlib.paths import RESULTS
from benchlib.shapes import SHAPES, write_llama_shape
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import fmt, median, table
from benchlib.worker import emit_result, run_worker_process

CONFIGS = ("base", "standin", "llama-8b")


def _time(llm: Any, prompts: list[Any], params: Any) -> float:
    t0 = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - t0


def run_worker(a: argparse.Namespace) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    dummy = a.worker == "llama-8b"
    llm = LLM(
        model=a.model,
        dtype="bfloat16",
        max_model_len=a.max_model_len,
        enable_prefix_caching=False,  # every repeat computes its prompts again
        gpu_memory_utilization=a.gpu_memory_utilization,
        seed=0,
        **(dict(load_format="dummy", skip_tokenizer_init=True) if dummy else {}),
    )
    rng = random.Random(0)

    def prompts(n: int, length: int) -> list[Any]:
        return [
            TokensPrompt(prompt_token_ids=[rng.randrange(3, a.vocab) for _ in range(length)])
            for _ in range(n)
        ]

    def params(max_tokens: int) -> Any:
        return SamplingParams(
            max_tokens=max_tokens, temperature=0.0, ignore_eos=True, detokenize=False
        )

    out: dict[str, Any] = {"config": a.worker, "decode_ms": {}}
    for b in a.batch_sizes:
        _time(llm, prompts(b, a.prompt_len), params(1 + a.steps))  # warm-up
        per_step = []
        for _ in range(a.repeats):
            batch = prompts(b, a.prompt_len)
            first = _time(llm, batch, params(1))
            full = _time(llm, batch, params(1 + a.steps))
            per_step.append((full - first) / a.steps)
        out["decode_ms"][str(b)] = 1000 * median(per_step)
    _time(llm, prompts(1, a.prefill_tokens), params(1))  # warm-up
    out["prefill_ms"] = 1000 * median(
        _time(llm, prompts(1, a.prefill_tokens), params(1)) for _ in range(a.repeats)
    )
    if not dummy:
        tok = llm.get_tokenizer()
        texts = [
            json.loads(line)["prompt"]
            for line in agentic_prompts_path().read_text().splitlines()[: a.check_prompts]
        ]
        ids = [[0, *tok.encode(t, add_special_tokens=False)][-a.check_prompt_len :] for t in texts]
        res = llm.generate(
            [TokensPrompt(prompt_token_ids=i) for i in ids],
            params(a.check_tokens),
            use_tqdm=False,
        )
        out["tokens"] = [list(r.outputs[0].token_ids) for r in res]
    emit_result(out)


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def report(a: argparse.Namespace, rows: dict[str, dict[str, Any]], source: str) -> str:
    ref = rows.get("llama-8b")
    bs = [str(b) for b in a.batch_sizes]
    header = ["config", *[f"decode B={b} (ms)" for b in bs], f"prefill {a.prefill_tokens} (ms)"]
    cells = []
    for name in CONFIGS:
        r = rows.get(name)
        if r is None:
            continue
        row = [name]
        for key, value in [*((b, r["decode_ms"][b]) for b in bs), ("prefill", r["prefill_ms"])]:
            base = ref and (ref["decode_ms"][key] if key != "prefill" else ref["prefill_ms"])
            row.append(f"{fmt(value)} ({value / base:.2f}x)" if base else fmt(value))
        cells.append(row)
    lines = [
        f"# The 8B-cost stand-in ({a.device_name or 'CPU'})",
        "",
        f"Base: {source}. Default vLLM settings (CUDA graphs), bf16, prefix caching off. "
        f"Decode: {a.prompt_len}-token random prompts, {a.steps} steps, median of {a.repeats}; "
        "in brackets: the row's time divided by the Llama-8B's (random weights). "
        "Target: the stand-in within 10% of the Llama-8B.",
        "",
        *table(header, cells, "l" + "r" * (len(header) - 1)),
    ]
    if "base" in rows and "standin" in rows:
        pairs = list(zip(rows["standin"]["tokens"], rows["base"]["tokens"]))
        diffs = [first_difference(s, b) for s, b in pairs]
        same = sum(d is None for d in diffs)
        lines += [
            "",
            f"Greedy tokens, stand-in against base: {same}/{len(pairs)} prompts identical over "
            f"{a.check_tokens} tokens"
            + (
                "; first differences at " + ", ".join(str(d) for d in diffs if d is not None)
                if same < len(pairs)
                else ""
            )
            + f" (shipped agentic prompts, last {a.check_prompt_len} tokens).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", help="the small Llama (default: the shipped bench-lm in bf16)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--prefill-tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--check-prompts", type=int, default=16)
    p.add_argument("--check-prompt-len", type=int, default=1024)
    p.add_argument("--check-tokens", type=int, default=128)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0

    import torch
    from arctic_bench_standin.make import make_standin

    a.device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    a.out_dir.mkdir(parents=True, exist_ok=True)
    base, source, _ = model_to_serve(a.base, on_gpu=True)
    vocab = json.loads((Path(base) / "config.json").read_text())["vocab_size"]
    models = {
        "base": Path(base),
        "standin": make_standin(Path(base), a.out_dir / "standin-llama-8b", SHAPES["llama-8b"]),
        "llama-8b": write_llama_shape("llama-8b", a.out_dir),
    }
    stamp = version_stamp()
    rows: dict[str, dict[str, Any]] = {}
    shared = [
        "--batch-sizes", *map(str, a.batch_sizes), "--prompt-len", str(a.prompt_len),
        "--steps", str(a.steps), "--prefill-tokens", str(a.prefill_tokens),
        "--repeats", str(a.repeats), "--check-prompts", str(a.check_prompts),
        "--check-prompt-len", str(a.check_prompt_len), "--check-tokens", str(a.check_tokens),
        "--max-model-len", str(a.max_model_len), "--vocab", str(vocab),
        "--gpu-memory-utilization", str(a.gpu_memory_utilization),
    ]  # fmt: skip
    for name in a.configs:
        cmd = [sys.executable, __file__, "--worker", name, "--model", str(models[name]), *shared]
        log = a.out_dir / f"standin_check_{name}.log"
        (rows[name],) = run_worker_process(name, cmd, log, dict(os.environ), 1)
        md = report(a, rows, source)  # after each configuration: a cut-short run keeps its rows
        write_results(a.out_dir, "standin_check", md, {"rows": rows}, stamp, 1)
    print(stamped_markdown(md, stamp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
