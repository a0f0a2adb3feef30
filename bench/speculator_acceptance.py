"""Train Arctic speculators for a base model and compare their acceptance
with suffix decoding on the same held-out outputs.

    python bench/speculator_acceptance.py --base-model ../shared/bench-lm \\
        --prompts ../shared/bench-data/agentic-requests.jsonl --device cuda \\
        --dtype bfloat16 --heads lstm:256 lstm:1024 mlp:256 mlp:1024

Steps:

1. One distillation run per head (``--heads METHOD:INNER_DIM``) through
   ``arctic_inference_core.speculator.train`` with the same data: the base
   model's greedy continuations of the prompts and its hidden states, built
   once and shared (the data cache of the first run is copied to the rest).
   Held-out prompts (``--num-eval``) are never trained on.
2. On the held-out continuations, for every head, for suffix decoding
   (``SuffixDecodingCache``, global tree warmed with the training
   continuations) and for head + suffix (the suffix draft when its score is at
   least ``min(k, n_predict)``, as the vLLM ``arctic`` method picks):

   * per-position acceptance: at every position, the fraction whose first
     ``j`` draft tokens all match the base model (``j = 1..n_predict``), and
     their sum, the mean accepted length (suffix drafts cut to ``n_predict``
     here, so the columns compare like with like);
   * replayed greedy decoding: a verification step accepts the longest
     matching draft prefix plus one bonus token; tokens per step is what a
     serving engine sees (suffix drafts up to ``--k`` tokens).

Results: ``<out-dir>/speculator_acceptance.{md,json}``; trained heads in
``<out-dir>/<method>-<inner_dim>/speculator``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.suffix.replay import accepted_prefix as prefix_len
from benchlib.tables import table

from arctic_inference_core.speculator import draft, load_speculator
from arctic_inference_core.speculator.train import CACHE_NAME, FINAL_DIR
from arctic_inference_core.speculator.train import parse_args as train_args
from arctic_inference_core.speculator.train import run as train_run
from arctic_inference_core.suffix import SuffixDecodingCache
from arctic_inference_core.traces import read_prompt_records


def train_heads(a: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    first: Path | None = None
    for spec in a.heads:
        method, inner = spec.split(":")
        out = a.out_dir / f"{method}-{inner}"
        out.mkdir(parents=True, exist_ok=True)
        if first is not None and not (out / CACHE_NAME).exists():
            shutil.copy(first / CACHE_NAME, out / CACHE_NAME)
        argv = [
            "--base-model",
            a.base_model,
            "--prompts",
            a.prompts,
            "--out",
            str(out),
            "--method",
            method,
            "--inner-dim",
            inner,
            "--n-predict",
            str(a.n_predict),
            "--steps",
            str(a.steps),
            "--batch-size",
            str(a.batch_size),
            "--lr",
            str(a.lr),
            "--max-new-tokens",
            str(a.max_new_tokens),
            "--max-prompt-tokens",
            str(a.max_prompt_tokens),
            "--num-eval",
            str(a.num_eval),
            "--eval-every",
            str(a.eval_every),
            "--gen-batch-size",
            str(a.gen_batch_size),
            "--device",
            a.device,
            "--dtype",
            a.dtype,
        ]
        if a.max_prompts:
            argv += ["--max-prompts", str(a.max_prompts)]
        t0 = time.time()
        doc = train_run(train_args(argv), log=lambda *x: print(*x, file=sys.stderr))
        runs.append(
            {"name": f"{method}:{inner}", "dir": out, "eval": doc, "seconds": time.time() - t0}
        )
        first = first or out
    return runs


class Held:
    """One held-out continuation: full prompt ids, ``ids`` (last prompt token
    then the continuation) and the base hidden states at those positions."""

    def __init__(self, prompt: list[int], ids: torch.Tensor, hidden: torch.Tensor) -> None:
        self.prompt, self.ids, self.hidden = prompt, ids.tolist(), hidden

    def drafts(self, spec: Any, device: str) -> list[list[int]]:
        # position q: state hidden[q] produced ids[q+1]; drafts predict ids[q+2..]
        n = len(self.ids) - 1
        h = self.hidden[:n].to(device, next(spec.parameters()).dtype)
        last = torch.tensor(self.ids[1 : n + 1], device=device)
        with torch.no_grad():
            return draft(spec, h, last).tolist()


def load_split(
    a: argparse.Namespace, run_dir: Path, doc: dict[str, Any]
) -> tuple[list[Held], list[list[int]]]:
    from transformers import AutoTokenizer

    data = torch.load(run_dir / CACHE_NAME, map_location="cpu", weights_only=True)
    tok = AutoTokenizer.from_pretrained(a.base_model)
    prompts = {r["id"]: r["prompt"] for r in read_prompt_records(a.prompts, limit=a.max_prompts)}
    held_ids = set(doc["eval_prompt_ids"])
    held, train_seqs = [], []
    for r in data["records"]:
        pids = tokenize(tok, prompts[r["id"]])[-a.max_prompt_tokens :]
        if len(pids) != r["prompt_len"] or pids[-1] != int(r["ids"][0]):
            raise SystemExit(f"prompt {r['id']!r} re-tokenizes differently from the training data")
        if r["id"] in held_ids:
            held.append(Held(pids, r["ids"], r["hidden"]))
        else:
            train_seqs.append(pids + r["ids"][1:].tolist())
    return held, train_seqs


def tokenize(tok: Any, text: str) -> list[int]:
    """A prompt's ids as the training command makes them (special tokens
    added); :func:`load_split` checks them against the training data."""
    return list(tok(text, add_special_tokens=True)["input_ids"])


class SuffixDrafter:
    def __init__(self, train_seqs: list[list[int]], depth: int) -> None:
        self.cache = SuffixDecodingCache(max_tree_depth=depth)
        for i, s in enumerate(train_seqs):  # the training continuations are the global history
            self.cache.start_request(("train", i), s)
            self.cache.stop_request(("train", i))
        self.n = 0

    def start(self, h: Held) -> Any:
        self.n += 1
        rid = ("held", self.n)
        self.cache.start_request(rid, h.prompt)
        self.cache.add_active_response(rid, h.ids[1:2])
        return rid

    def speculate(self, rid: Any, k: int) -> tuple[list[int], float]:
        d = self.cache.speculate(rid, None, max_spec_tokens=k)
        return list(d.token_ids), float(d.score)


def per_position(
    held: list[Held],
    n: int,
    head_drafts: list[list[list[int]]] | None,
    suffix: SuffixDrafter | None,
    k: int,
) -> list[float]:
    """Fraction of positions whose first j draft tokens match, j = 1..n."""
    hits = [0] * n
    total = 0
    for i, h in enumerate(held):
        rid = suffix.start(h) if suffix else None
        for q in range(len(h.ids) - 2 - n + 1):
            truth = h.ids[q + 2 : q + 2 + n]
            cand = head_drafts[i][q] if head_drafts else None
            if suffix:
                s, score = suffix.speculate(rid, k)
                if cand is None or score >= min(k, n):
                    cand = s
            a = prefix_len(cand[:n], truth)
            for j in range(a):
                hits[j] += 1
            total += 1
            if suffix:
                suffix.cache.add_active_response(rid, [h.ids[q + 2]])
        if suffix:
            suffix.cache.stop_request(rid)
    return [x / max(total, 1) for x in hits]


def replay(
    held: list[Held],
    head_drafts: list[list[list[int]]] | None,
    suffix: SuffixDrafter | None,
    k: int,
    n: int,
) -> float:
    """Greedy decoding replay: tokens per verification step."""
    tokens = steps = 0
    for i, h in enumerate(held):
        rid = suffix.start(h) if suffix else None
        q, last = 0, len(h.ids) - 2  # ids[q+1] is known; the last one is ids[last+1]
        while q < last:
            cand: list[int] = head_drafts[i][q] if head_drafts else []
            if suffix:
                s, score = suffix.speculate(rid, k)
                if not head_drafts or score >= min(k, n):
                    cand = s
            adv = min(prefix_len(cand, h.ids[q + 2 :]) + 1, last - q)
            if suffix:
                suffix.cache.add_active_response(rid, h.ids[q + 2 : q + 2 + adv])
            q += adv
            tokens += adv
            steps += 1
        if suffix:
            suffix.cache.stop_request(rid)
    return tokens / max(steps, 1)


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    n = meta["n_predict"]
    header = [
        "drafter",
        *(f"acc@{j}" for j in range(1, n + 1)),
        f"mean accepted (<= {n})",
        "replay tokens/step",
        "train s",
    ]
    cells = [
        [
            r["name"],
            *(f"{x:.3f}" for x in r["acceptance"]),
            f"{sum(r['acceptance']):.3f}",
            f"{r['tokens_per_step']:.2f}",
            f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "",
        ]
        for r in rows
    ]
    out = [
        f"# Speculator acceptance on {meta['held_out']} held-out prompts",
        "",
        f"Base model `{meta['base_model']}`, {meta['train_prompts']} training prompts, "
        f"{meta['max_new_tokens']} new tokens, n_predict {n}, suffix k {meta['k']} "
        f"(depth {meta['depth']}), {meta['device']} {meta['dtype']}, {meta['steps']} steps.",
        "",
        *table(header, cells, "l" * (n + 4)),
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base-model", required=True)
    p.add_argument("--prompts", required=True, help="JSONL prompts (agentic traces work)")
    p.add_argument(
        "--heads", nargs="+", default=["lstm:512", "mlp:512"], help="METHOD:INNER_DIM per head"
    )
    p.add_argument("--n-predict", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--num-eval", type=int, default=100)
    p.add_argument("--gen-batch-size", type=int, default=64)
    p.add_argument("--k", type=int, default=32, help="suffix draft cap in the replay")
    p.add_argument("--depth", type=int, default=64, help="suffix tree depth")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--out-dir", type=Path, default=RESULTS / "speculators")
    a = p.parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = version_stamp()

    runs = train_heads(a)
    held, train_seqs = load_split(a, runs[0]["dir"], runs[0]["eval"])
    n = a.n_predict
    rows = [
        {
            "name": "suffix",
            "acceptance": per_position(held, n, None, SuffixDrafter(train_seqs, a.depth), a.k),
            "tokens_per_step": replay(held, None, SuffixDrafter(train_seqs, a.depth), a.k, n),
        }
    ]
    for r in runs:
        spec = load_speculator(r["dir"] / FINAL_DIR, device=a.device).eval()
        drafts = [h.drafts(spec, a.device) for h in held]
        for with_suffix in (False, True):
            sfx = (lambda: SuffixDrafter(train_seqs, a.depth)) if with_suffix else (lambda: None)
            rows.append(
                {
                    "name": r["name"] + (" + suffix" if with_suffix else ""),
                    "acceptance": per_position(held, n, drafts, sfx(), a.k),
                    "tokens_per_step": replay(held, drafts, sfx(), a.k, n),
                    "train_seconds": None if with_suffix else r["seconds"],
                    "train_history": None if with_suffix else r["eval"]["history"],
                }
            )
    meta = {
        "base_model": a.base_model,
        "held_out": len(held),
        "train_prompts": len(train_seqs),
        "max_new_tokens": a.max_new_tokens,
        "n_predict": n,
        "k": a.k,
        "depth": a.depth,
        "device": a.device,
        "dtype": a.dtype,
        "steps": a.steps,
    }
    md = render(rows, meta)
    write_results(a.out_dir, "speculator_acceptance", md, {"meta": meta, "rows": rows}, stamp, 1)
    print(stamped_markdown(md, stamp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
