"""Quantize bench-lm's weights to int8 for shipping in the repository.

Every 2-D weight matrix (the embedding, tied to the LM head, and every
projection) becomes int8 with one fp16 scale per output row: symmetric
absmax, ``scale = max|w_row| / 127`` (rounded to fp16 first),
``q = round(w / scale)``. 1-D weights (the RMSNorm gains) are kept exactly,
as fp32. The result is one safetensors file, ``model.int8.safetensors``;
``bench/benchlib/assets.py`` holds the format (``write_int8_asset`` writes
it, ``bench_model_dir`` dequantizes it into an ordinary Hugging Face
directory).

    python bench/assets/quantize_bench_lm.py --src ../shared/bench-lm --out bench/assets/bench-lm-int8

Config, generation config and tokenizer files are copied unchanged, except
that config.json records the quantization (a ``quantization`` entry, read by
no library). The asset's README.md is written by hand.

``--verify`` then compares the int8 model (dequantized) with the original
in transformers on CPU: greedy continuations of 8 shipped prompts (position
of the first differing token) and the mean loss on the responses of 16
shipped traces, in float32 and in bfloat16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for benchlib
from benchlib.assets import (  # noqa: E402
    WEIGHTS,
    agentic_prompts_path,
    bench_model_dir,
    write_int8_asset,
)


def verify(
    src: Path, out: Path, n_greedy: int = 8, n_loss: int = 16, new_tokens: int = 128
) -> dict:
    """Greedy agreement and response loss of the int8 asset vs the original."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [json.loads(line) for line in agentic_prompts_path().open()]
    tok = AutoTokenizer.from_pretrained(src)
    step = max(len(rows) // n_greedy, 1)
    greedy_rows = rows[::step][:n_greedy]
    loss_rows = rows[:n_loss]
    result: dict = {"greedy_ids": [r["id"] for r in greedy_rows], "loss_ids": len(loss_rows)}
    with tempfile.TemporaryDirectory() as cache:
        for dtype in ("float32", "bfloat16"):
            models = {
                "original": AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype)),
                "int8": AutoModelForCausalLM.from_pretrained(
                    bench_model_dir(dtype, asset=out, cache=Path(cache)),
                    dtype=getattr(torch, dtype),
                ),
            }
            gens: dict[str, list[list[int]]] = {k: [] for k in models}
            losses: dict[str, list[float]] = {k: [] for k in models}
            for name, model in models.items():
                model.eval()
                with torch.no_grad():
                    for r in greedy_rows:
                        ids = [0] + tok.encode(r["prompt"], add_special_tokens=False)
                        x = torch.tensor([ids[-1024:]])
                        y = model.generate(
                            x, max_new_tokens=new_tokens, do_sample=False, eos_token_id=1
                        )
                        gens[name].append(y[0, x.shape[1] :].tolist())
                    for r in loss_rows:
                        p = [0] + tok.encode(r["prompt"], add_special_tokens=False)
                        a = tok.encode(r["response"], add_special_tokens=False) + [1]
                        ids = (p + a)[-2048:]
                        n = min(len(a), len(ids) - 1)
                        logits = model(torch.tensor([ids])).logits[0, -n - 1 : -1].float()
                        nll = torch.nn.functional.cross_entropy(
                            logits, torch.tensor(ids[-n:]), reduction="sum"
                        )
                        losses[name].append((nll.item(), n))
            firsts = [_first_difference(a, b) for a, b in zip(gens["original"], gens["int8"])]
            result[dtype] = {
                "first_difference": firsts,
                "mean_first_difference": sum(firsts) / len(firsts),
                "identical": sum(a == b for a, b in zip(gens["original"], gens["int8"])),
                "loss": {
                    k: sum(v for v, _ in ls) / sum(n for _, n in ls) for k, ls in losses.items()
                },
                "tokens": {k: [len(g) for g in v] for k, v in gens.items()},
            }
            result.setdefault("_gens", {})[dtype] = gens
    f32, b16 = result["_gens"]["float32"], result["_gens"]["bfloat16"]
    dt = [_first_difference(a, b) for a, b in zip(f32["original"], b16["original"])]
    result["original_bf16_vs_float32"] = {"first_difference": dt, "mean": sum(dt) / len(dt)}
    del result["_gens"]
    return result


def _first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing token (the shorter length if one is a
    prefix of the other)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--src", type=Path, required=True, help="bench-lm directory (bf16 safetensors)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--verify", action="store_true", help="compare with the original in transformers (CPU)"
    )
    a = p.parse_args()
    info = write_int8_asset(a.src, a.out)
    print(f"{info['matrices']} int8 matrices, {info['bytes'] / 1e6:.1f} MB -> {a.out / WEIGHTS}")
    if a.verify:
        print(json.dumps(verify(a.src, a.out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
