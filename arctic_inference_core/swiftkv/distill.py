"""Distill a converted SwiftKV model (released ``llama_swiftkv`` layout) against
its original Llama (the teacher).

    python -m arctic_inference_core.swiftkv.distill --base-model LLAMA --student SWIFTKV \\
        --prompts FILE.jsonl --out DIR [--steps 200 --lr 1e-3 --batch-size 4 --seq-len 256 \\
        --eval-every 50 --device cpu --dtype float32 --resume --threads N --no-progress]

``--base-model`` is the teacher (the original Llama, or a ``llama_swiftkv``
checkpoint, which then runs with ``swiftkv`` off: the student's own directory
works, since the released layout keeps every original weight; ``--teacher`` is
its older spelling), ``--no-progress`` was ``--quiet`` and ``--warmup-steps`` was
``--warmup``; the old spellings still work. The command skeleton (flags,
``CommandError``, progress lines, ``--resume``) is shared with
:mod:`arctic_inference_core.speculator.train` and
:mod:`arctic_inference_core.swiftkv.convert`.

Only the parameters that SwiftKV adds are trained, as in ArcticTraining's
recipe: ``model.norm_swiftkv.weight`` and the later layers'
``self_attn.q_proj_swiftkv`` and ``k/v_proj_swiftkv``. Every other parameter
is frozen (``requires_grad=False``) and stays bit-identical, so the result with
``swiftkv: false`` is still the original Llama. The student runs with
``swiftkv`` on and is saved with it on.

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
optimizer, step: small; ``--resume`` continues from it with the same data order
and is an error without it),
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from arctic_inference_core._command import (
    CHECKPOINT_DIR,
    EVAL_NAME,
    CommandError,
    Log,
    Reporter,
    add_base_model,
    add_force,
    add_out,
    add_prompts,
    add_training_args,
    apply_threads,
    check_ints,
    check_training_args,
    new_parser,
    progress,
    resume_checkpoint,
    run_main,
    torch_dtype,
)
from arctic_inference_core.traces import read_prompt_records

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from arctic_inference_core.swiftkv.hf_llama import LlamaSwiftKVForCausalLM

__all__ = [
    "DistillError",
    "build_parser",
    "distill",
    "evaluate",
    "main",
    "parse_args",
    "run",
]


def is_swiftkv_param(name: str) -> bool:
    """Whether parameter ``name`` is one SwiftKV adds to the Llama
    (``norm_swiftkv``, ``*_proj_swiftkv``)."""
    return "swiftkv" in name


_DTYPES = ("float32", "bfloat16", "float16")
_STATE_NAME = "state.json"

#: The error of the commands (the name this module had for it).
DistillError = CommandError


# ----------------------------------------------------------------------------- data


def read_texts(path: Path, max_bytes: int | None = None) -> list[str]:
    try:
        recs = read_prompt_records(path, max_bytes=max_bytes)
    except ValueError as e:
        raise CommandError(str(e)) from None
    return [r["prompt"] + (r["response"] or "") for r in recs]


def chunk_tokens(token_lists: list[list[int]], seq_len: int) -> torch.Tensor:
    flat = [t for ids in token_lists for t in ids]
    n = len(flat) // seq_len
    if n == 0:
        return torch.empty(0, seq_len, dtype=torch.long)
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)


def build_data(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    seq_len: int,
    eval_fraction: float,
    seed: int,
    max_eval_chunks: int,
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
        raise CommandError(f"not enough training text for one chunk of --seq-len {seq_len}")
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


def trainable_names(model: LlamaSwiftKVForCausalLM) -> list[str]:
    return [name for name, _ in model.named_parameters() if is_swiftkv_param(name)]


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
def evaluate(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    chunks: torch.Tensor,
    device: str,
    batch_size: int,
) -> dict[str, Any]:
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


def _check_pair(teacher: PreTrainedModel, student: PreTrainedModel, say: Reporter) -> None:
    tc, sc = teacher.config, student.config
    for key in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    ):
        if getattr(tc, key) != getattr(sc, key):
            raise CommandError(
                f"teacher and student differ in {key}: {getattr(tc, key)} vs {getattr(sc, key)}"
            )
    t_emb = teacher.get_input_embeddings().weight
    s_emb = student.get_input_embeddings().weight
    assert isinstance(t_emb, torch.Tensor) and isinstance(s_emb, torch.Tensor)
    if not torch.allclose(t_emb.float(), s_emb.float(), atol=1e-2, rtol=1e-2):
        say(
            "warning: student embeddings differ from the teacher's; was the student converted from it?"
        )


# ----------------------------------------------------------------------------- main loop


def run(args: argparse.Namespace, log: Log | None = None) -> dict[str, Any]:
    """Distill; returns ``{"before", "after", "out"}`` (the first and last
    evaluations; ``"stopped_at"`` too with ``--stop-at``).

    Progress lines go to ``log`` (``None``: stderr).

    Raises:
        CommandError: bad flags or input (the message names the flag).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from arctic_inference_core.swiftkv.hf_llama import LlamaSwiftKVConfig, LlamaSwiftKVForCausalLM

    say = Reporter("distill", log)
    check_training_args(args, min_steps=0, min_eval_every=0)
    check_ints(args, {"seq_len": 2})
    if not 0 < args.eval_fraction < 1:
        raise CommandError(f"--eval-fraction must be in (0, 1), got {args.eval_fraction}")
    dtype = torch_dtype(args.dtype, _DTYPES)
    teacher_path, student_path, out = Path(args.base_model), Path(args.student), Path(args.out)
    for what, pth in (("base-model", teacher_path), ("student", student_path)):
        if not (pth / "config.json").is_file():
            raise CommandError(f"--{what} {pth}: not a model directory (no config.json)")
    s_cfg = AutoConfig.from_pretrained(student_path)
    if not isinstance(s_cfg, LlamaSwiftKVConfig):
        raise CommandError(
            f"--student {student_path} is not a llama_swiftkv checkpoint "
            f"(model_type={s_cfg.model_type!r}); convert it first"
        )
    if s_cfg.num_key_value_layers == s_cfg.num_hidden_layers:
        raise CommandError(
            f"--student {student_path} has no later layer (num_key_value_layers = "
            f"num_hidden_layers = {s_cfg.num_hidden_layers}); convert with a smaller K"
        )
    t_cfg = AutoConfig.from_pretrained(teacher_path)
    if t_cfg.model_type not in ("llama", "llama_swiftkv"):
        raise CommandError(
            f"--base-model {teacher_path} is not a Llama checkpoint "
            f"(model_type={t_cfg.model_type!r}; llama or llama_swiftkv)"
        )
    ckpt = out / CHECKPOINT_DIR
    resume_from = resume_checkpoint(args, _STATE_NAME)
    if resume_from is None and (out / EVAL_NAME).exists() and not args.force:
        raise CommandError(
            f"{out} already has a run (use --resume to continue or --force to overwrite)"
        )

    torch.manual_seed(args.seed)
    apply_threads(args)
    device = args.device
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=dtype).to(device).eval()
    if isinstance(teacher, LlamaSwiftKVForCausalLM):
        teacher.swiftkv(False)  # the original Llama the checkpoint keeps
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=dtype).to(device)
    assert isinstance(student, LlamaSwiftKVForCausalLM)
    if not student.config.swiftkv:
        say("the student's config has swiftkv: false; distilling (and saving) it with swiftkv on")
        student.swiftkv(True)
    saved_dtype = getattr(s_cfg, "dtype", None) or getattr(s_cfg, "torch_dtype", None)
    for p in teacher.parameters():
        p.requires_grad_(False)
    _check_pair(teacher, student, say)
    names = trainable_names(student)
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
    warmup = min(args.warmup_steps, max(args.steps // 10, 1))

    def lr_at(step: int) -> float:  # linear warmup, cosine to 10%
        if step < warmup:
            return float(args.lr * (step + 1) / warmup)
        frac = (step - warmup) / max(1, args.steps - warmup)
        return float(args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))))

    start = 0
    history: list[dict[str, Any]] = []
    if resume_from is not None:
        from safetensors.torch import load_file

        state = json.loads((resume_from / _STATE_NAME).read_text())
        tensors = load_file(str(resume_from / "trainable.safetensors"))
        if set(tensors) != set(names):
            raise CommandError(
                f"--resume: checkpoint tensors {sorted(tensors)} != trainable {sorted(names)}"
            )
        with torch.no_grad():
            pdict = dict(student.named_parameters())
            for k, v in tensors.items():
                pdict[k].copy_(v.to(pdict[k].dtype))
        opt.load_state_dict(torch.load(resume_from / "optimizer.pt", map_location=device))
        start = int(state["step"])
        if (out / EVAL_NAME).is_file():
            history = json.loads((out / EVAL_NAME).read_text()).get("history", [])
            history = [h for h in history if h["step"] <= start]
        say.resuming(resume_from, start)
    out.mkdir(parents=True, exist_ok=True)
    say(
        f"{len(train_chunks)} train chunks, {len(eval_chunks)} held-out chunks "
        f"of {args.seq_len} tokens; training {n_train} of {n_total} parameters"
    )

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
        (out / EVAL_NAME).write_text(
            json.dumps({"meta": meta, "history": history}, indent=2) + "\n"
        )

    def do_eval(step: int, train_loss: float | None) -> dict[str, Any]:
        t0 = time.time()
        r = evaluate(teacher, student, eval_chunks, device, args.batch_size)
        r = {"step": step, **r, "train_kl": train_loss, "eval_s": round(time.time() - t0, 2)}
        history.append(r)
        write_eval()
        say.evaluation(
            step,
            f"student_ce {r['student_ce']:.4f} (teacher {r['teacher_ce']:.4f}) "
            f"kl {r['kl']:.4f} agreement {r['greedy_agreement']:.4f}",
        )
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
        do_eval(start, None)

    frozen_before = None
    if args.check_frozen:
        frozen_before = {
            k: v.detach().clone() for k, v in student.named_parameters() if k not in set(names)
        }

    end = args.steps if args.stop_at is None else max(start, min(args.steps, args.stop_at))
    bar = progress(range(start, end), args, initial=start, total=args.steps, desc="distill")
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
            do_eval(done, running)
            save_checkpoint(done)
    bar.close()
    if end < args.steps:  # --stop-at: checkpoint only, continue later with --resume
        save_checkpoint(end)
        say(f"stopped at step {end}; continue with --resume")
        return {"before": history[0], "after": history[-1], "stopped_at": end, "out": str(out)}
    if not history or history[-1]["step"] != args.steps:
        do_eval(args.steps, running)
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
    student.eval()  # type: ignore[no-untyped-call]  # transformers leaves it untyped
    if isinstance(saved_dtype, torch.dtype) and saved_dtype != dtype:
        # PreTrainedModel.to's decorator hides its signature from mypy
        student.to(saved_dtype)  # type: ignore[arg-type]
    student.save_pretrained(final, safe_serialization=True)
    from arctic_inference_core.swiftkv.convert import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        src = tok_dir / name
        if src.is_file() and not (final / name).exists():
            shutil.copyfile(src, final / name)
    say.done(f"student in {final}, eval in {out / EVAL_NAME}", args.steps)
    return {"before": history[0], "after": history[-1], "out": str(out)}


#: The old name of :func:`run`.
distill = run


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "arctic_inference_core.swiftkv.distill",
        "Train a converted SwiftKV model's new K/V projection to match the original Llama.",
    )
    add_base_model(p, "original Llama checkpoint directory (the teacher)", "--teacher")
    p.add_argument("--student", required=True, help="converted llama_swiftkv directory")
    add_prompts(p, "JSONL with 'prompt' (and optional 'response')")
    add_out(p, "output directory")
    add_training_args(
        p,
        steps=200,
        batch_size=4,
        lr=1e-3,
        weight_decay=0.0,
        warmup_steps=20,
        warmup_help="linear warm-up steps (at most max(steps // 10, 1))",
        grad_clip=1.0,
        eval_every=50,
        eval_every_help="evaluate (and checkpoint) every K steps; 0: only before and after",
        dtypes=_DTYPES,
        dtype_help="teacher and student dtype while training",
        warmup_aliases=("--warmup",),
        no_progress_aliases=("--quiet",),
    )
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-fraction", type=float, default=0.05, help="fraction of records held out")
    p.add_argument("--max-eval-chunks", type=int, default=32)
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this much text")
    p.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step (checkpoint saved; same LR schedule as --steps); continue with --resume",
    )
    add_force(p, "overwrite a previous run in OUT")
    p.add_argument(
        "--check-frozen", action="store_true", help="assert frozen parameters are unchanged"
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``error: ...`` and status 2 on bad input; the summary
    on stdout."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
