"""Distill a converted SwiftKV model against its original Llama (the teacher).

    python -m arctic_inference_core.swiftkv.distill --teacher LLAMA --student SWIFTKV \\
        --prompts FILE.jsonl --out DIR [--steps 200 --lr 1e-3 --batch-size 4 --seq-len 256 \\
        --eval-every 50 --device cpu --dtype float32 --resume]

Only the parameters that SwiftKV adds are trained: ``model.swiftkv_proj.*``
(the stacked K/V projection) and ``model.norm_swiftkv.weight``
(``--train-qo`` also trains the later layers' ``q_proj``/``o_proj``). Every other
parameter is frozen (``requires_grad=False``) and stays bit-identical.

Loss: forward KL ``KL(p_teacher || p_student)`` of the next-token distributions
(temperature 1), averaged over all positions of each chunk. All positions run all
layers in training (``logits_to_keep=0``), and every position's logits depend on
the SwiftKV K/V, so every position is a "later" position. KL on logits (rather
than MSE on last hidden states) is what the evaluation measures (greedy agreement,
cross-entropy), and it is invariant to the scale of the hidden states.

Data: JSONL with ``"prompt"`` and optional ``"response"``; each record's text is
``prompt + response``, tokenized as ``[bos] + ids + [eos]``, records are concatenated
and cut into chunks of ``--seq-len`` tokens. Records are shuffled (``--seed``) and
split into train / held-out (``--eval-fraction``) by record, so held-out text is
never trained on. ``--max-bytes`` caps the text read.

Evaluation on the held-out chunks (before training = step 0, every
``--eval-every`` steps, and at the end) writes ``eval.json``: teacher and student
cross-entropy (next-token loss, nats/token), mean KL, and greedy agreement
(fraction of positions where ``argmax(student) == argmax(teacher)``).

Outputs in ``--out``: ``eval.json``, ``checkpoint/`` (trainable tensors,
optimizer, step: small; ``--resume`` continues from it with the same data order),
and ``final/`` (full student, ``save_pretrained`` in the student's saved dtype,
plus tokenizer files).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arctic_inference_core.traces import read_prompt_records

SWIFTKV_PREFIXES = ("model.swiftkv_proj.", "model.norm_swiftkv.")


class DistillError(ValueError):
    """Bad input to distillation."""


# ----------------------------------------------------------------------------- data


def read_texts(path: Path, max_bytes: int | None = None) -> list[str]:
    try:
        recs = read_prompt_records(path, max_bytes=max_bytes)
    except ValueError as e:
        raise DistillError(str(e)) from None
    return [r["prompt"] + (r["response"] or "") for r in recs]


def chunk_tokens(token_lists: list[list[int]], seq_len: int) -> torch.Tensor:
    flat = [t for ids in token_lists for t in ids]
    n = len(flat) // seq_len
    if n == 0:
        return torch.empty(0, seq_len, dtype=torch.long)
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)


def build_data(
    texts: list[str], tokenizer, seq_len: int, eval_fraction: float, seed: int, max_eval_chunks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(texts) * eval_fraction))) if len(texts) > 1 else 0
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    def encode(idx: list[int]) -> list[list[int]]:
        out = []
        for i in idx:
            ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
            out.append(
                ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])
            )
        return out

    eval_chunks = chunk_tokens(encode(order[:n_eval]), seq_len)[:max_eval_chunks]
    train_chunks = chunk_tokens(encode(order[n_eval:]), seq_len)
    if len(train_chunks) == 0:
        raise DistillError(f"not enough training text for one chunk of --seq-len {seq_len}")
    if len(eval_chunks) == 0:
        # Tiny data sets: fall back to the last training chunk (reported in eval.json).
        eval_chunks = train_chunks[-1:]
    return train_chunks, eval_chunks


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Deterministic data order: epoch-wise permutations, so --resume continues it."""
    start = step * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, i = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(perm[i]))
    return out


# ----------------------------------------------------------------------------- model


def trainable_names(model: torch.nn.Module, train_qo: bool = False) -> list[str]:
    n = model.config.num_key_value_layers
    names = []
    for name, _ in model.named_parameters():
        if name.startswith(SWIFTKV_PREFIXES):
            names.append(name)
        elif train_qo and any(
            name.startswith(f"model.layers.{i}.self_attn.{p}_proj.")
            for i in range(n, model.config.num_hidden_layers)
            for p in "qo"
        ):
            names.append(name)
    return names


def freeze_all_but(model: torch.nn.Module, names: list[str]) -> list[torch.nn.Parameter]:
    keep = set(names)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
        if name in keep:
            params.append(p)
    return params


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(p_teacher || p_student), fp32."""
    s = F.log_softmax(student_logits.float(), -1).flatten(0, -2)
    t = F.log_softmax(teacher_logits.float(), -1).flatten(0, -2)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


@torch.no_grad()
def evaluate(teacher, student, chunks: torch.Tensor, device: str, batch_size: int) -> dict:
    student.eval()
    tot = {"teacher_ce": 0.0, "student_ce": 0.0, "kl": 0.0, "agree": 0.0}
    n_pos = n_next = 0
    for i in range(0, len(chunks), batch_size):
        ids = chunks[i : i + batch_size].to(device)
        tl = teacher(ids).logits.float()
        sl = student(ids).logits.float()
        v = tl.shape[-1]
        tgt = ids[:, 1:].reshape(-1)
        tot["teacher_ce"] += float(F.cross_entropy(tl[:, :-1].reshape(-1, v), tgt, reduction="sum"))
        tot["student_ce"] += float(F.cross_entropy(sl[:, :-1].reshape(-1, v), tgt, reduction="sum"))
        tot["kl"] += float(kl_loss(sl, tl)) * ids.numel()
        tot["agree"] += float((sl.argmax(-1) == tl.argmax(-1)).sum())
        n_pos += ids.numel()
        n_next += tgt.numel()
    return {
        "teacher_ce": tot["teacher_ce"] / n_next,
        "student_ce": tot["student_ce"] / n_next,
        "kl": tot["kl"] / n_pos,
        "greedy_agreement": tot["agree"] / n_pos,
        "eval_tokens": n_pos,
    }


def _dtype(name: str) -> torch.dtype:
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise DistillError(f"--dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _check_pair(teacher, student) -> None:
    tc, sc = teacher.config, student.config
    for key in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    ):
        if getattr(tc, key) != getattr(sc, key):
            raise DistillError(
                f"teacher and student differ in {key}: {getattr(tc, key)} vs {getattr(sc, key)}"
            )
    t_emb = teacher.get_input_embeddings().weight
    s_emb = student.get_input_embeddings().weight
    if not torch.allclose(t_emb.float(), s_emb.float(), atol=1e-2, rtol=1e-2):
        print(
            "warning: student embeddings differ from the teacher's; was the student converted from it?",
            file=sys.stderr,
        )


# ----------------------------------------------------------------------------- main loop


def distill(args: argparse.Namespace) -> dict:
    from tqdm import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from arctic_inference_core.swiftkv.hf_llama import SwiftKVLlamaConfig, SwiftKVLlamaForCausalLM

    for flag in ("steps", "batch_size", "seq_len", "eval_every"):
        if getattr(args, flag) < (0 if flag in ("steps", "eval_every") else 1):
            raise DistillError(
                f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}"
            )
    if args.seq_len < 2:
        raise DistillError("--seq-len must be >= 2")
    if not args.lr > 0:
        raise DistillError(f"--lr must be > 0, got {args.lr}")
    if not 0 < args.eval_fraction < 1:
        raise DistillError(f"--eval-fraction must be in (0, 1), got {args.eval_fraction}")
    dtype = _dtype(args.dtype)
    teacher_path, student_path, out = Path(args.teacher), Path(args.student), Path(args.out)
    for what, pth in (("teacher", teacher_path), ("student", student_path)):
        if not (pth / "config.json").is_file():
            raise DistillError(f"--{what} {pth}: not a model directory (no config.json)")
    s_cfg = AutoConfig.from_pretrained(student_path)
    if not isinstance(s_cfg, SwiftKVLlamaConfig):
        raise DistillError(
            f"--student {student_path} is not a swiftkv_llama checkpoint "
            f"(model_type={s_cfg.model_type!r}); convert it first"
        )
    t_cfg = AutoConfig.from_pretrained(teacher_path)
    if t_cfg.model_type != "llama":
        raise DistillError(
            f"--teacher {teacher_path} is not a Llama checkpoint (model_type={t_cfg.model_type!r})"
        )
    ckpt = out / "checkpoint"
    if args.resume and not (ckpt / "state.json").is_file():
        raise DistillError(f"--resume: no checkpoint in {ckpt}")
    if not args.resume and (out / "eval.json").exists() and not args.force:
        raise DistillError(
            f"{out} already has a run (use --resume to continue or --force to overwrite)"
        )

    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = args.device
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=dtype).to(device).eval()
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=dtype).to(device)
    assert isinstance(student, SwiftKVLlamaForCausalLM)
    saved_dtype = getattr(s_cfg, "dtype", None) or getattr(s_cfg, "torch_dtype", None)
    for p in teacher.parameters():
        p.requires_grad_(False)
    _check_pair(teacher, student)
    names = trainable_names(student, args.train_qo)
    params = freeze_all_but(student, names)
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in student.parameters())

    tok_dir = student_path if (student_path / "tokenizer_config.json").exists() else teacher_path
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    texts = read_texts(Path(args.prompts), args.max_bytes)
    train_chunks, eval_chunks = build_data(
        texts, tokenizer, args.seq_len, args.eval_fraction, args.seed, args.max_eval_chunks
    )

    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.95))
    warmup = min(args.warmup, max(args.steps // 10, 1))

    def lr_at(step: int) -> float:  # linear warmup, cosine to 10%
        if step < warmup:
            return args.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    start = 0
    history: list[dict] = []
    if args.resume:
        from safetensors.torch import load_file

        state = json.loads((ckpt / "state.json").read_text())
        tensors = load_file(str(ckpt / "trainable.safetensors"))
        if set(tensors) != set(names):
            raise DistillError(
                f"--resume: checkpoint tensors {sorted(tensors)} != trainable {sorted(names)}"
            )
        with torch.no_grad():
            pdict = dict(student.named_parameters())
            for k, v in tensors.items():
                pdict[k].copy_(v.to(pdict[k].dtype))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device))
        start = int(state["step"])
        if (out / "eval.json").is_file():
            history = json.loads((out / "eval.json").read_text()).get("history", [])
            history = [h for h in history if h["step"] <= start]
    out.mkdir(parents=True, exist_ok=True)

    meta = {
        "teacher": str(teacher_path),
        "student": str(student_path),
        "prompts": str(args.prompts),
        "num_key_value_layers": student.config.num_key_value_layers,
        "key_value_group_size": student.config.key_value_group_size,
        "num_hidden_layers": student.config.num_hidden_layers,
        "trainable": names,
        "trainable_params": n_train,
        "total_params": n_total,
        "loss": "KL(teacher || student), all positions, T=1",
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "dtype": args.dtype,
        "device": device,
        "seed": args.seed,
        "train_chunks": len(train_chunks),
        "eval_chunks": len(eval_chunks),
        "train_tokens": train_chunks.numel(),
        "eval_tokens": eval_chunks.numel(),
    }

    def write_eval() -> None:
        (out / "eval.json").write_text(
            json.dumps({"meta": meta, "history": history}, indent=2) + "\n"
        )

    def do_eval(step: int, train_loss: float | None) -> dict:
        t0 = time.time()
        r = evaluate(teacher, student, eval_chunks, device, args.batch_size)
        r = {"step": step, **r, "train_kl": train_loss, "eval_s": round(time.time() - t0, 2)}
        history.append(r)
        write_eval()
        return r

    def save_checkpoint(step: int) -> None:
        from safetensors.torch import save_file

        tmp = out / "checkpoint.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        pdict = dict(student.named_parameters())
        save_file(
            {k: pdict[k].detach().cpu().contiguous() for k in names},
            str(tmp / "trainable.safetensors"),
        )
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "trainable": names}) + "\n")
        if ckpt.exists():
            shutil.rmtree(ckpt)
        tmp.rename(ckpt)

    if not history or history[-1]["step"] != start:
        r = do_eval(start, None)
        print(
            f"eval step {start}: "
            + json.dumps({k: r[k] for k in ("teacher_ce", "student_ce", "kl", "greedy_agreement")}),
            file=sys.stderr,
        )

    frozen_before = None
    if args.check_frozen:
        frozen_before = {
            k: v.detach().clone() for k, v in student.named_parameters() if k not in set(names)
        }

    end = args.steps if args.stop_at is None else max(start, min(args.steps, args.stop_at))
    bar = tqdm(
        range(start, end), initial=start, total=args.steps, desc="distill", disable=args.quiet
    )
    running = None
    for step in bar:
        student.train()
        idx = batch_indices(step, len(train_chunks), args.batch_size, args.seed)
        ids = train_chunks[idx].to(device)
        with torch.no_grad():
            t_logits = teacher(ids).logits
        s_logits = student(ids).logits
        loss = kl_loss(s_logits, t_logits)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        lv = float(loss.detach())
        running = lv if running is None else 0.9 * running + 0.1 * lv
        bar.set_postfix(kl=f"{running:.4f}", lr=f"{lr_at(step):.2e}")
        done = step + 1
        if args.eval_every and done % args.eval_every == 0 and done != args.steps:
            r = do_eval(done, running)
            bar.write(
                f"eval step {done}: student_ce {r['student_ce']:.4f} (teacher {r['teacher_ce']:.4f}) "
                f"kl {r['kl']:.4f} agreement {r['greedy_agreement']:.4f}"
            )
            save_checkpoint(done)
    bar.close()
    if end < args.steps:  # --stop-at: checkpoint only, continue later with --resume
        save_checkpoint(end)
        return {"before": history[0], "after": history[-1], "stopped_at": end, "out": str(out)}
    if not history or history[-1]["step"] != args.steps:
        r = do_eval(args.steps, running)
    save_checkpoint(args.steps)
    if frozen_before is not None:
        changed = [
            k
            for k, v in student.named_parameters()
            if k in frozen_before and not torch.equal(v, frozen_before[k])
        ]
        if changed:
            raise RuntimeError(f"frozen parameters changed: {changed}")

    final = out / "final"
    if isinstance(saved_dtype, str):
        saved_dtype = getattr(torch, saved_dtype, None)
    student.eval()
    if isinstance(saved_dtype, torch.dtype) and saved_dtype != dtype:
        student.to(saved_dtype)
    student.save_pretrained(final, safe_serialization=True)
    from arctic_inference_core.swiftkv.convert import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        src = tok_dir / name
        if src.is_file() and not (final / name).exists():
            shutil.copyfile(src, final / name)
    summary = {"before": history[0], "after": history[-1], "out": str(out)}
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m arctic_inference_core.swiftkv.distill",
        description="Train a converted SwiftKV model's new K/V projection to match the original Llama.",
    )
    p.add_argument("--teacher", required=True, help="original Llama checkpoint directory")
    p.add_argument("--student", required=True, help="converted swiftkv_llama directory")
    p.add_argument("--prompts", required=True, help="JSONL with 'prompt' (and optional 'response')")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=50, help="0: only before and after")
    p.add_argument("--eval-fraction", type=float, default=0.05, help="fraction of records held out")
    p.add_argument("--max-eval-chunks", type=int, default=32)
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this much text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-qo", action="store_true", help="also train the later layers' q_proj/o_proj"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step (checkpoint saved; same LR schedule as --steps); continue with --resume",
    )
    p.add_argument("--force", action="store_true", help="overwrite a previous run in OUT")
    p.add_argument(
        "--check-frozen", action="store_true", help="assert frozen parameters are unchanged"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = distill(args)
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
