"""Prefill speed of a SwiftKV model against the Llama it was converted from,
both served by vLLM (extras switch on for SwiftKV).

    python bench/swiftkv_prefill.py --llama ../shared/bench-lm --num-key-value-layers 4

Converts the Llama (``arctic_inference_core.swiftkv.convert``; weights are not
distilled, so only speed is meaningful), then for each model, in its own
process: prefill throughput (prompt tokens / second with one output token)
and a prompt:output workload per ``--ratios`` (output tokens per second of
the whole run, prefill included). Reports the ratio SwiftKV / Llama next to
the linear-layer FLOPs a prompt token saves. Results:
``<out-dir>/swiftkv_prefill.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from vllm_compare import run_worker_process  # noqa: E402


def linear_flops_per_token(cfg: dict[str, Any], k: Optional[int]) -> tuple[float, float]:
    """(Llama, SwiftKV) multiply-adds per prompt token in the decoder's linear
    layers (the LM head runs for the last token only in both)."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q = h * cfg["num_attention_heads"] * d
    kv = 2 * h * cfg["num_key_value_heads"] * d
    layer = 2 * q + kv + 3 * h * inter  # q, o, k+v, gate/up/down
    if k is None:
        return layers * layer, layers * layer
    return layers * layer, k * layer + (layers - k) * kv


def run_worker(a: argparse.Namespace) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt

    rng = __import__("random").Random(0)
    vocab = json.loads((Path(a.model) / "config.json").read_text())["vocab_size"]
    prompts = [TokensPrompt(prompt_token_ids=[rng.randrange(3, vocab) for _ in range(a.prompt_len)])
               for _ in range(a.num_prompts)]
    llm = LLM(model=a.model, max_model_len=a.prompt_len + a.prompt_len + 16, enforce_eager=a.enforce_eager,
              gpu_memory_utilization=a.gpu_memory_utilization, enable_prefix_caching=False, seed=0)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    out: dict[str, Any] = {"model": a.worker}
    t0 = time.perf_counter()
    llm.generate(prompts, SamplingParams(max_tokens=1, ignore_eos=True), use_tqdm=False)
    out["prefill_tokens_per_s"] = a.num_prompts * a.prompt_len / (time.perf_counter() - t0)
    for ratio in a.ratios:
        n_out = max(1, a.prompt_len // ratio)
        t0 = time.perf_counter()
        llm.generate(prompts, SamplingParams(max_tokens=n_out, ignore_eos=True), use_tqdm=False)
        wall = time.perf_counter() - t0
        out[f"{ratio}:1"] = {"seconds": wall, "output_tokens_per_s": a.num_prompts * n_out / wall}
    print("RESULT " + json.dumps(out), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama", required=True, help="Hugging Face Llama directory")
    p.add_argument("--num-key-value-layers", type=int, required=True)
    p.add_argument("--prompt-len", type=int, default=1024)
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--ratios", type=int, nargs="+", default=[10, 1], help="prompt:output ratios")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--enforce-eager", action="store_true", help="(default on CPU)")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0
    import torch

    a.out_dir.mkdir(parents=True, exist_ok=True)
    a.enforce_eager = a.enforce_eager or not torch.cuda.is_available()
    swiftkv = a.out_dir / f"swiftkv-k{a.num_key_value_layers}"
    if not (swiftkv / "config.json").exists():
        subprocess.run([sys.executable, "-m", "arctic_inference_core.swiftkv.convert", "--llama", a.llama,
                        "--out", str(swiftkv), "--num-key-value-layers", str(a.num_key_value_layers), "--force"],
                       check=True, stdout=subprocess.DEVNULL)
    rows = []
    for name, model in (("llama", a.llama), ("swiftkv", str(swiftkv))):
        cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--llama", a.llama,
               "--num-key-value-layers", str(a.num_key_value_layers), "--prompt-len", str(a.prompt_len),
               "--num-prompts", str(a.num_prompts), "--ratios", *map(str, a.ratios),
               "--gpu-memory-utilization", str(a.gpu_memory_utilization)]
        if a.enforce_eager:
            cmd.append("--enforce-eager")
        env = dict(os.environ, ARCTIC_INFERENCE_VLLM_EXTRAS="1")
        rows += run_worker_process(name, cmd, a.out_dir / f"swiftkv_prefill_{name}.log", env, 1)
    cfg = json.loads((Path(a.llama) / "config.json").read_text())
    f_llama, f_swiftkv = linear_flops_per_token(cfg, a.num_key_value_layers)
    base, skv = rows
    lines = [f"# SwiftKV prefill in vLLM ({'GPU' if not a.enforce_eager else 'CPU'})", "",
             f"Llama `{a.llama}` ({cfg['num_hidden_layers']} layers) vs its SwiftKV conversion with "
             f"num_key_value_layers={a.num_key_value_layers} (random weights' speed only: not distilled); "
             f"{a.num_prompts} random prompts of {a.prompt_len} tokens. Linear-layer FLOPs per prompt token: "
             f"{f_swiftkv / f_llama:.2f}x of the Llama ({1 - f_swiftkv / f_llama:.0%} saved; attention "
             "still runs for every prompt token).", "",
             "| measure | Llama | SwiftKV | SwiftKV / Llama |", "|---|---:|---:|---:|",
             f"| prefill tokens/s | {base['prefill_tokens_per_s']:.0f} | {skv['prefill_tokens_per_s']:.0f} | "
             f"{skv['prefill_tokens_per_s'] / base['prefill_tokens_per_s']:.2f}x |"]
    for ratio in a.ratios:
        b, s = base[f"{ratio}:1"], skv[f"{ratio}:1"]
        lines.append(f"| {ratio}:1 output tokens/s | {b['output_tokens_per_s']:.1f} | "
                     f"{s['output_tokens_per_s']:.1f} | {s['output_tokens_per_s'] / b['output_tokens_per_s']:.2f}x |")
    md = "\n".join(lines) + "\n"
    (a.out_dir / "swiftkv_prefill.md").write_text(md)
    (a.out_dir / "swiftkv_prefill.json").write_text(json.dumps({"rows": rows, "flops": [f_llama, f_swiftkv]},
                                                               indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
