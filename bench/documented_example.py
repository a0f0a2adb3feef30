"""Arctic Inference's documented serving example on this project, checked:
greedy tokens of the example's configuration against the same model (same
quantization, one rank) without speculation.

The example (Arctic Inference 0.3.0's docs) serves a SwiftKV model with
``--quantization fp8 --ulysses-sequence-parallel-size 2
--enable-shift-parallel`` and ``speculative_config={"method": "arctic",
"model": SPECULATOR, "num_speculative_tokens": 3, "enable_suffix_decoding":
true, "disable_by_batch_size": 64}``. Here:

    python bench/documented_example.py                       # bench-lm, CPU or GPU
    python bench/documented_example.py --quantization fp8    # GPU
    python bench/documented_example.py --ulysses-sp 2 --shift

``--llama DIR`` (default: bench-lm) is converted into the released SwiftKV
layout (``arctic_inference_core.swiftkv.convert``, not distilled: the tokens
say nothing of quality, only whether the two configurations agree);
``--swiftkv DIR`` takes a SwiftKV checkpoint as it is. Without
``--speculator`` a random ``sum_lstm`` speculator in the released layout is
written for the model (its drafts are rarely accepted; suffix drafts do the
work). Each configuration runs in its own process with the switch
``ARCTIC_INFERENCE_ENABLED=1`` (Arctic Inference's name, an alias here).

Reported (``<out-dir>/documented_example.{md,json}``): per configuration
output tokens/s, drafts and accepted tokens, and the requests whose greedy
tokens equal the reference's (with the first differing positions). On CPU in
float32 (``ARCTIC_INFERENCE_CPU_DTYPE=float32``) a difference is an error
(exit 1); in bf16 and with fp8, near-ties may differ between one rank and SP
(another reduction order), so there the share is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.assets import agentic_prompts_path, model_to_serve
from benchlib.engine import load_prompts, spec_counters
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import table
from benchlib.ties import first_difference
from benchlib.worker import emit_result, run_worker_process

from arctic_inference_vllm.testing import memory_kwargs

N_PREDICT = 3


def example_spec(speculator: str) -> dict[str, Any]:
    return {
        "method": "arctic",
        "model": speculator,
        "num_speculative_tokens": N_PREDICT,
        "enable_suffix_decoding": True,
        "disable_by_batch_size": 64,
    }


def write_speculator(model: Path, out: Path) -> Path:
    """A random sum_lstm speculator for ``model``, in the released layout."""
    import torch

    from arctic_inference_core.speculator import (
        SpeculatorConfig,
        build_speculator,
        save_speculator,
    )

    cfg = json.loads((model / "config.json").read_text())
    torch.manual_seed(0)
    spec = build_speculator(
        SpeculatorConfig(
            method="sum_lstm",
            n_predict=N_PREDICT,
            input_hidden_dim=cfg["hidden_size"],
            inner_dim=256,
            vocab_size=cfg["vocab_size"],
            tie_weights=True,
            scale_input=True,
            base_model_archs=tuple(cfg.get("architectures") or ()),
        )
    )
    save_speculator(spec, out)
    return out


def run_worker(a: argparse.Namespace) -> None:
    from vllm import LLM, SamplingParams, TokensPrompt
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # as the example's Python form does
    prompts = json.loads(Path(a.prompts_file).read_text())
    kwargs: dict[str, Any] = {}
    if a.worker == "example":
        kwargs = {
            "speculative_config": example_spec(a.speculator),
            "ulysses_sequence_parallel_size": a.ulysses_sp,
        }
        if a.shift:
            kwargs["enable_shift_parallel"] = True
    llm = LLM(
        model=a.model,
        quantization=None if a.quantization == "none" else a.quantization,
        tensor_parallel_size=1,
        max_model_len=a.max_model_len,
        **memory_kwargs(a.model, len(prompts) * a.max_model_len, a.gpu_memory_utilization),
        enforce_eager=a.enforce_eager,
        dtype=a.dtype,
        disable_log_stats=False,
        seed=0,
        **kwargs,
    )
    params = SamplingParams(temperature=0.0, max_tokens=a.max_tokens, ignore_eos=True)
    token_prompts = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    before, t0 = spec_counters(llm), time.perf_counter()
    outs = llm.generate(token_prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t0
    after = spec_counters(llm)
    outputs = [list(o.outputs[0].token_ids) for o in outs]
    emit_result(
        {
            "config": a.worker,
            "tokens_per_s": sum(map(len, outputs)) / wall,
            "drafts": after["drafts"] - before["drafts"],
            "accepted": after["accepted"] - before["accepted"],
            "outputs": outputs,
        }
    )


def render(rows: list[dict], meta: dict[str, Any]) -> str:
    ref = rows[0]["outputs"]
    cells = []
    for r in rows:
        diffs = [first_difference(x, y) for x, y in zip(r["outputs"], ref, strict=True)]
        same = sum(d is None for d in diffs)
        where = sorted(d for d in diffs if d is not None)[:4]
        cells.append(
            [
                r["label"],
                f"{r['tokens_per_s']:.1f}",
                f"{int(r['drafts'])}",
                f"{int(r['accepted'])}",
                f"{same}/{len(diffs)}" + (f" (first diff at {where})" if where else ""),
            ]
        )
    head = (
        "# Arctic Inference's documented example\n\n"
        f"Model: {meta['model']}; speculator: {meta['speculator']}; quantization: "
        f"{meta['quantization']}; {meta['num_prompts']} prompts, greedy, {meta['max_tokens']} "
        "new tokens.\n\n"
    )
    header = ["configuration", "tok/s", "drafts", "accepted", "identical to the reference"]
    return head + "\n".join(table(header, cells)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--llama", help="Llama directory to convert (default: bench-lm)")
    src.add_argument("--swiftkv", help="a SwiftKV checkpoint (released layout)")
    p.add_argument("--num-key-value-layers", type=int, default=None, help="default: half")
    p.add_argument("--speculator", help="speculator directory (default: a random one)")
    p.add_argument("--quantization", default="none", help="vLLM quantization (GPU: fp8)")
    p.add_argument("--ulysses-sp", type=int, default=1)
    p.add_argument("--shift", action="store_true", help="--enable-shift-parallel")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    for hidden in ("--worker", "--model", "--prompts-file", "--dtype"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--enforce-eager", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        run_worker(a)
        return 0
    if a.shift and a.ulysses_sp < 2:
        p.error("--shift needs --ulysses-sp 2 or more")

    import torch
    from transformers import AutoTokenizer

    from arctic_inference_vllm.testing import cpu_binding, cpu_dtype

    on_gpu = torch.cuda.is_available()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = version_stamp()
    if a.swiftkv:
        model = Path(a.swiftkv)
    else:
        llama = Path(a.llama) if a.llama else Path(model_to_serve(None, on_gpu)[0])
        layers = json.loads((llama / "config.json").read_text())["num_hidden_layers"]
        k = a.num_key_value_layers or layers // 2
        model = a.out_dir / f"documented-example-swiftkv-k{k}"
        if not (model / "config.json").exists():
            cmd = [sys.executable, "-m", "arctic_inference_core.swiftkv.convert", "--llama"]
            cmd += [str(llama), "--out", str(model), "--num-key-value-layers", str(k), "--force"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    speculator = a.speculator or str(
        write_speculator(model, a.out_dir / "documented-example-speculator")
    )
    tok = AutoTokenizer.from_pretrained(model)
    room = a.max_model_len - a.max_tokens - 1
    texts, _ = load_prompts(str(agentic_prompts_path()), a.num_prompts)
    prompts = [tok.encode(t)[-room:] for t in texts]
    prompts_file = a.out_dir / "documented_example_prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    env = {**os.environ, "ARCTIC_INFERENCE_ENABLED": "1"}
    env.pop("ARCTIC_INFERENCE_VLLM_EXTRAS", None)
    if not on_gpu:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(a.ulysses_sp)
    rows = []
    configs = [
        ("plain", "no speculation, one rank (reference)"),
        ("example", f"the example: arctic + suffix, SP={a.ulysses_sp}, shift {a.shift}"),
    ]
    for name, label in configs:
        cmd = [sys.executable, __file__, "--worker", name, "--model", str(model)]
        cmd += ["--speculator", speculator, "--prompts-file", str(prompts_file)]
        cmd += ["--quantization", a.quantization, "--ulysses-sp", str(a.ulysses_sp)]
        cmd += ["--max-tokens", str(a.max_tokens), "--max-model-len", str(a.max_model_len)]
        cmd += ["--gpu-memory-utilization", str(a.gpu_memory_utilization)]
        cmd += ["--dtype", "auto" if on_gpu else cpu_dtype()]
        cmd += ["--shift"] if a.shift else []
        cmd += [] if on_gpu else ["--enforce-eager"]
        log = a.out_dir / f"documented_example_{name}.log"
        (row,) = run_worker_process(name, cmd, log, env, 1)
        rows.append({**row, "label": label})
    meta = {
        "model": f"SwiftKV `{model}`",
        "speculator": speculator if a.speculator else "random sum_lstm, released layout",
        "quantization": a.quantization,
        "num_prompts": len(prompts),
        "max_tokens": a.max_tokens,
        "ulysses_sp": a.ulysses_sp,
        "shift": a.shift,
    }
    md = render(rows, meta)
    write_results(a.out_dir, "documented_example", md, {"meta": meta, "rows": rows}, stamp)
    print("\n" + stamped_markdown(md, stamp))
    same = all(r["outputs"] == rows[0]["outputs"] for r in rows)
    # in float32 the tokens must agree exactly; in bf16 near-ties may differ
    # between one rank and SP (another reduction order), on CPU as on GPU
    strict = not on_gpu and cpu_dtype() == "float32" and a.quantization == "none"
    return 1 if strict and not same else 0


if __name__ == "__main__":
    raise SystemExit(main())
