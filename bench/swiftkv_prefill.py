"""Prefill speed of a SwiftKV model against the Llama it was converted from,
both served by vLLM (extras switch on for SwiftKV).

    python bench/swiftkv_prefill.py --llama ../shared/bench-lm --num-key-value-layers 4
    python bench/swiftkv_prefill.py --shape llama-8b --num-key-value-layers 16   # GPU

``--llama DIR`` converts a real checkpoint
(``arctic_inference_core.swiftkv.convert``; weights are not distilled, so
only speed is meaningful). ``--shape llama-8b`` writes configs only and
serves random weights (vLLM's ``load_format="dummy"``): timing only.

For each configuration, in its own process: prefill throughput (prompt
tokens / second with one output token), time to first token of one prompt
alone (median of ``--ttft-repeats``), and one run per prompt:output
``--ratios`` (output tokens per second of the whole run, prefill included).
``--methods`` picks the configurations: ``llama``, ``swiftkv`` (fast prefill
on: prompt tokens skip the later layers), ``swiftkv-full`` (fast prefill
off: every token runs every layer). ``--quantization none fp8`` serves each
also with vLLM's ``quantization="fp8"`` (GPU; rows ``<method>+fp8``), and
reports the share of greedy tokens (``GREEDY_PROMPTS`` prompts,
``GREEDY_TOKENS`` tokens each, position by position) equal to the same
method unquantized. Reports each against the Llama, next to the FLOPs a
prompt token costs. Results: ``<out-dir>/swiftkv_prefill.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.paths import RESULTS
from benchlib.shapes import SHAPES, flops_per_prompt_token, write_llama_shape, write_swiftkv_shape
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import median, ratio, table
from benchlib.worker import emit_result, run_worker_process

from arctic_inference_vllm.testing import memory_kwargs

METHODS = ("llama", "swiftkv", "swiftkv-full")
GREEDY_PROMPTS, GREEDY_TOKENS = 4, 32

__all__ = ["METHODS", "flops_per_prompt_token", "main", "report", "run_worker", "write_shape"]


def write_shape(name: str, out: Path, k: int) -> tuple[Path, Path]:
    """Config-only Llama and SwiftKV directories of a named shape."""
    return write_llama_shape(name, out), write_swiftkv_shape(name, out, k)


def run_worker(a: argparse.Namespace) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    rng = random.Random(0)
    vocab = json.loads((Path(a.model) / "config.json").read_text())["vocab_size"]
    prompts = [
        TokensPrompt(prompt_token_ids=[rng.randrange(3, vocab) for _ in range(a.prompt_len)])
        for _ in range(a.num_prompts + a.ttft_repeats + 2)
    ]
    warm, alone, prompts = (
        prompts[:2],
        prompts[2 : 2 + a.ttft_repeats],
        prompts[2 + a.ttft_repeats :],
    )
    extra: dict[str, Any] = {}
    if a.dummy:
        extra.update(load_format="dummy", skip_tokenizer_init=True)
    if a.worker == "swiftkv-full":
        extra["additional_config"] = {"arctic_inference": {"swiftkv_fast_prefill": False}}
    if a.quant != "none":
        extra["quantization"] = a.quant
    llm = LLM(
        model=a.model,
        max_model_len=2 * a.prompt_len + 16,
        enforce_eager=a.enforce_eager,
        **memory_kwargs(a.model, a.num_prompts * (2 * a.prompt_len + 16), a.gpu_memory_utilization),
        enable_prefix_caching=False,
        seed=0,
        **extra,
    )
    params = dict(ignore_eos=True, detokenize=not a.dummy)
    llm.generate(warm, SamplingParams(max_tokens=2, **params), use_tqdm=False)
    out: dict[str, Any] = {
        "model": a.worker if a.quant == "none" else f"{a.worker}+{a.quant}",
        "method": a.worker,
        "quantization": a.quant,
        "fast_prefill": llm.llm_engine.vllm_config.cache_config.kv_sharing_fast_prefill,
    }
    greedy = llm.generate(
        prompts[:GREEDY_PROMPTS],
        SamplingParams(temperature=0.0, max_tokens=GREEDY_TOKENS, **params),
        use_tqdm=False,
    )
    out["greedy"] = [list(o.outputs[0].token_ids) for o in greedy]
    t0 = time.perf_counter()
    llm.generate(prompts, SamplingParams(max_tokens=1, **params), use_tqdm=False)
    out["prefill_tokens_per_s"] = a.num_prompts * a.prompt_len / (time.perf_counter() - t0)
    ttft = []
    for p in alone:
        t0 = time.perf_counter()
        llm.generate([p], SamplingParams(max_tokens=1, **params), use_tqdm=False)
        ttft.append(time.perf_counter() - t0)
    out["ttft_ms"] = 1000 * median(ttft)
    for n in a.ratios:
        n_out = max(1, a.prompt_len // n)
        t0 = time.perf_counter()
        llm.generate(prompts, SamplingParams(max_tokens=n_out, **params), use_tqdm=False)
        wall = time.perf_counter() - t0
        out[f"{n}:1"] = {"seconds": wall, "output_tokens_per_s": a.num_prompts * n_out / wall}
    emit_result(out)


def _agreement(row: dict, rows: list[dict]) -> str:
    """Share of ``row``'s greedy tokens equal, position by position, to the
    same method's unquantized run."""
    plain = next(
        (
            r
            for r in rows
            if r.get("method") == row.get("method") and r.get("quantization") == "none"
        ),
        None,
    )
    if plain is None or row.get("quantization") == "none":
        return "-"
    pairs = [(x, y) for a, b in zip(row["greedy"], plain["greedy"]) for x, y in zip(a, b)]
    return f"{sum(x == y for x, y in pairs) / max(1, len(pairs)):.0%}"


def report(
    a: argparse.Namespace,
    cfg: dict[str, Any],
    flops: tuple[float, float],
    rows: list[dict],
    source: str,
) -> str:
    f_llama, f_swiftkv = flops
    base = next((r for r in rows if r["model"] == "llama"), rows[0])
    device = a.device_name or "CPU"
    lines = [
        f"# SwiftKV prefill in vLLM ({device})",
        "",
        f"{source} ({cfg['num_hidden_layers']} layers) against its SwiftKV form with "
        f"num_key_value_layers={a.num_key_value_layers}; {a.num_prompts} random prompts of {a.prompt_len} "
        f"tokens{', enforce_eager' if a.enforce_eager else ''}. A prompt token costs "
        f"{f_swiftkv / f_llama:.2f}x of the Llama's FLOPs (linear layers and attention; "
        f"{1 - f_swiftkv / f_llama:.0%} saved) when it skips the later layers (`swiftkv`); "
        "`swiftkv-full` runs every token through every layer (fast prefill off).",
    ]
    header = ["model", "prefill tokens/s", "vs Llama", "TTFT one prompt (ms)"]
    quantized = any(r.get("quantization", "none") != "none" for r in rows)
    if quantized:
        header.append("greedy = unquantized")
    for n in a.ratios:
        header += [f"{n}:1 output tok/s", "vs Llama"]
    cells = []
    for r in rows:
        row = [
            r["model"],
            f"{r['prefill_tokens_per_s']:.0f}",
            ratio(r["prefill_tokens_per_s"], base["prefill_tokens_per_s"]),
            f"{r['ttft_ms']:.1f}",
        ]
        if quantized:
            row.append(_agreement(r, rows))
        for n in a.ratios:
            got = r[f"{n}:1"]["output_tokens_per_s"]
            row += [f"{got:.1f}", ratio(got, base[f"{n}:1"]["output_tokens_per_s"])]
        cells.append(row)
    lines += ["", *table(header, cells)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--llama", help="Hugging Face Llama directory")
    src.add_argument(
        "--shape", choices=sorted(SHAPES), help="random weights of this shape (timing only)"
    )
    p.add_argument("--num-key-value-layers", type=int, required=True)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument(
        "--quantization",
        nargs="+",
        default=["none"],
        help="vLLM quantization methods to serve each method with (none: unquantized)",
    )
    p.add_argument("--quant", default="none", help=argparse.SUPPRESS)
    p.add_argument("--prompt-len", type=int, default=1024)
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--ttft-repeats", type=int, default=5)
    p.add_argument("--ratios", type=int, nargs="+", default=[10, 1], help="prompt:output ratios")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--enforce-eager", action="store_true", help="(default on CPU)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dummy", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0
    import torch

    a.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = version_stamp()
    a.device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    a.enforce_eager = a.enforce_eager or a.device_name is None
    if a.shape:
        llama, swiftkv = write_shape(a.shape, a.out_dir, a.num_key_value_layers)
        source = f"Llama of {a.shape} shape, random weights (timing only)"
    else:
        llama, swiftkv = Path(a.llama), a.out_dir / f"swiftkv-k{a.num_key_value_layers}"
        source = f"Llama `{a.llama}`, converted, not distilled (speed only)"
        if not (swiftkv / "config.json").exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "arctic_inference_core.swiftkv.convert",
                    "--llama",
                    a.llama,
                    "--out",
                    str(swiftkv),
                    "--num-key-value-layers",
                    str(a.num_key_value_layers),
                    "--force",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    cfg = json.loads((llama / "config.json").read_text())
    flops = flops_per_prompt_token(cfg, a.num_key_value_layers, a.prompt_len)
    rows = []
    for name, quant in [(m, q) for m in a.methods for q in a.quantization]:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--quant",
            quant,
            "--model",
            str(llama if name == "llama" else swiftkv),
            "--num-key-value-layers",
            str(a.num_key_value_layers),
            "--prompt-len",
            str(a.prompt_len),
            "--num-prompts",
            str(a.num_prompts),
            "--ttft-repeats",
            str(a.ttft_repeats),
            "--ratios",
            *map(str, a.ratios),
            "--gpu-memory-utilization",
            str(a.gpu_memory_utilization),
            "--shape" if a.shape else "--llama",
            a.shape or a.llama,
        ]
        cmd += ["--enforce-eager"] * a.enforce_eager + ["--dummy"] * bool(a.shape)
        env = dict(os.environ, ARCTIC_INFERENCE_VLLM_EXTRAS="1")
        log = a.out_dir / f"swiftkv_prefill_{name}{'' if quant == 'none' else '_' + quant}.log"
        rows += run_worker_process(name, cmd, log, env, 1)
        # written after each configuration: a run cut short keeps what it measured
        md = report(a, cfg, flops, rows, source)
        write_results(a.out_dir, "swiftkv_prefill", md, {"rows": rows, "flops": flops}, stamp, 1)
    print(stamped_markdown(md, stamp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
