"""Train an Arctic speculator (MLP or sum-LSTM draft heads) by distillation.

Usage::

    python -m arctic_inference_core.speculator.train --base-model PATH \\
        --prompts FILE.jsonl --out DIR [--method lstm|mlp] [--n-predict 3] \\
        [--inner-dim 512] [--steps N] [--batch-size B] [--lr LR] \\
        [--max-new-tokens 64] [--max-prompt-tokens 512] [--eval-every K] \\
        [--num-eval P] [--use-response] [--gen-batch-size B] [--resume] \\
        [--dtype float32|bfloat16] [--device cpu|cuda] [--threads N] [--no-progress]

The command skeleton (flags, ``CommandError``, progress lines, ``--resume``)
is shared with :mod:`arctic_inference_core.swiftkv.convert` and
:mod:`arctic_inference_core.swiftkv.distill`.

Pipeline:

1. Read JSONL prompts (a ``"prompt"`` field per line; the agentic-trace
   format ``{"id", "family", "prompt", "response"}`` works too). Prompts are
   left-truncated to their last ``--max-prompt-tokens`` tokens. A held-out
   split of ``--num-eval`` prompts is used only for evaluation.
2. Distillation data: for each prompt the base model's own greedy
   continuation (``model.generate``, ``--max-new-tokens``, batches of
   ``--gen-batch-size`` prompts of similar length) is generated (or, with
   ``--use-response``, the ``"response"`` text is used instead),
   then one forward pass over prompt+continuation records the last-layer
   hidden states (``outputs.hidden_states[-1]``, which in Hugging Face
   Llama-style models is *after* the final norm, the state the LM head reads;
   this is checked at run time) and the token ids. The tensors are cached in
   ``DIR/data_cache.pt`` and reused when the settings match.
3. Training, with the vLLM / fms-extras convention: at a position ``p``
   whose hidden state ``h_p`` produced token ``x[p+1]`` (``p >= prompt_len-1``,
   i.e. ``x[p+1]`` is a generated token), the speculator gets ``(h_p,
   x[p+1])`` and head ``i`` must predict ``x[p+2+i]`` (teacher forcing: head
   ``i`` consumes the true ``x[p+1+i]`` via ``forward_logits``). Loss: sum
   over heads of (optionally weighted) cross-entropy; targets past the end of
   the sequence are masked. AdamW, linear warm-up then cosine or linear
   decay, gradient clipping.
4. Every ``--eval-every`` steps (and before training and at the end), greedy
   drafts (:func:`~arctic_inference_core.speculator.draft`) on the held-out
   positions are compared with the base model's tokens: ``acceptance[j-1]``
   is the fraction of positions whose first ``j`` draft tokens all equal the
   base model's next ``j`` tokens; ``mean_accepted_length = sum(acceptance)``
   (draft tokens accepted per verification step, not counting the bonus token
   the base model always adds). Written to ``DIR/eval.json``.
5. Checkpoints: ``DIR/checkpoint/`` holds the speculator in the
   :func:`save_speculator` format plus ``trainer_state.pt`` (step, optimizer,
   scheduler, RNG, eval history), rewritten at every evaluation;
   ``--resume`` continues from it (and is an error without it). The final
   speculator is also written to ``DIR/speculator/``.

Single process only (CPU or one GPU); no torch.distributed data parallelism.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from arctic_inference_core._command import (
    CHECKPOINT_DIR,
    EVAL_NAME,
    CommandError,
    Log,
    Reporter,
    add_base_model,
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
from arctic_inference_core.speculator.checkpoint import (
    build_speculator,
    load_speculator,
    save_speculator,
)
from arctic_inference_core.speculator.config import SpeculatorConfig
from arctic_inference_core.speculator.draft import draft
from arctic_inference_core.speculator.modules import SpeculatorBase
from arctic_inference_core.traces import read_prompt_records

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CACHE_NAME",
    "FINAL_DIR",
    "TrainingError",
    "build_parser",
    "evaluate",
    "load_prompts",
    "main",
    "parse_args",
    "run",
]

CACHE_NAME = "data_cache.pt"
CKPT_DIR = CHECKPOINT_DIR
FINAL_DIR = "speculator"
STATE_NAME = "trainer_state.pt"
_CACHE_VERSION = 1
_DTYPES = ("float32", "bfloat16")

#: The error of the training commands (the name this module had for it).
TrainingError = CommandError


# --------------------------------------------------------------------- args
def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "arctic_inference_core.speculator.train",
        "Distil an Arctic speculator (MLP / sum-LSTM draft heads) from a HF causal LM.",
    )
    add_base_model(p, "Hugging Face model directory (config + weights + tokenizer)")
    add_prompts(p, "JSONL file, one object with a 'prompt' field per line")
    add_out(p, "output directory (cache, checkpoints, eval.json)")
    p.add_argument("--method", choices=("lstm", "mlp"), default="lstm")
    p.add_argument("--n-predict", type=int, default=3)
    p.add_argument("--inner-dim", type=int, default=512)
    p.add_argument("--tie-weights", action="store_true", help="share head weights across positions")
    p.add_argument(
        "--scale-input", action="store_true", help="RMS-normalise the base hidden state first"
    )
    add_training_args(
        p,
        steps=1000,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.01,
        warmup_steps=None,
        warmup_help="default: min(100, steps // 10)",
        grad_clip=1.0,
        eval_every=100,
        eval_every_help="evaluate (and checkpoint) every K steps",
        dtypes=_DTYPES,
        dtype_help="base model dtype; with bfloat16 the speculator is trained under bf16 "
        "autocast (fp32 master weights) and saved in bf16",
    )
    p.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr = lr * ratio")
    p.add_argument(
        "--head-weights", default=None, help="comma-separated loss weight per head (default all 1)"
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--max-prompt-tokens", type=int, default=512, help="keep the last N prompt tokens"
    )
    p.add_argument(
        "--max-prompts", type=int, default=None, help="use only the first N prompts of the file"
    )
    p.add_argument(
        "--use-response", action="store_true", help="use the 'response' field instead of generating"
    )
    p.add_argument(
        "--gen-batch-size",
        type=int,
        default=32,
        help="prompts generated together (left-padded greedy decoding)",
    )
    p.add_argument(
        "--num-eval", type=int, default=None, help="held-out prompts (default: 20%%, at least 1)"
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _check_args(a: argparse.Namespace) -> None:
    check_training_args(a)
    check_ints(
        a,
        {
            "n_predict": 1,
            "inner_dim": 1,
            "max_new_tokens": 1,
            "max_prompt_tokens": 1,
            "gen_batch_size": 1,
        },
    )
    if a.num_eval is not None:
        check_ints(a, {"num_eval": 1})
    torch_dtype(a.dtype, _DTYPES)


def _head_weights(a: argparse.Namespace) -> list[float]:
    if a.head_weights is None:
        return [1.0] * a.n_predict
    try:
        w = [float(x) for x in a.head_weights.split(",")]
    except ValueError:
        raise CommandError(
            f"--head-weights must be comma-separated numbers, got {a.head_weights!r}"
        ) from None
    if len(w) != a.n_predict or any(x < 0 for x in w):
        raise CommandError(
            f"--head-weights needs {a.n_predict} non-negative numbers, got {a.head_weights!r}"
        )
    return w


# --------------------------------------------------------------------- data
def load_prompts(
    path: str, use_response: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Read a JSONL prompt file into ``[{"id", "family", "prompt", "response"}]``.

    Raises:
        CommandError: missing/unreadable file, bad JSON (with line number),
            missing or non-string ``prompt`` (or ``response`` with
            ``use_response``), or no prompts at all.
    """
    try:
        return read_prompt_records(path, limit=limit, need_response=use_response)
    except ValueError as e:
        raise CommandError(f"--prompts: {e}") from None


def _load_base(
    path: str, dtype: torch.dtype, device: str
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    if not os.path.isdir(path):
        raise CommandError(f"--base-model: {path!r} is not a directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CommandError(
            f"--base-model: {path!r} has no config.json (not a Hugging Face model directory)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - surface any tokenizer loading problem
        raise CommandError(f"--base-model: cannot load the tokenizer from {path!r}: {e}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as e:  # noqa: BLE001
        raise CommandError(f"--base-model: cannot load the model from {path!r}: {e}") from None
    # PreTrainedModel.to's decorator hides its signature from mypy
    return tok, model.to(device).eval()  # type: ignore[arg-type]


def _base_model_archs(path: str) -> tuple[str, ...] | None:
    """The base model's ``architectures`` (written as the speculator's
    ``base_model_archs``, which the vLLM adapter checks against the served
    model); None when its config.json does not list them."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            archs = json.load(f).get("architectures")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(archs, list) and archs and all(isinstance(x, str) and x for x in archs):
        return tuple(archs)
    return None


def _cache_key(a: argparse.Namespace, prompts: list[dict[str, Any]]) -> dict[str, Any]:
    ph = hashlib.sha256()
    for r in prompts:
        ph.update(r["prompt"].encode("utf-8", "surrogatepass"))
        ph.update(b"\0")
        if a.use_response:
            ph.update((r["response"] or "").encode("utf-8", "surrogatepass"))
        ph.update(b"\1")
    wfiles = sorted(
        f for f in os.listdir(a.base_model) if f.endswith((".safetensors", ".bin", "config.json"))
    )
    wh = hashlib.sha256()
    for f in wfiles:
        st = os.stat(os.path.join(a.base_model, f))
        wh.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    return {
        "version": _CACHE_VERSION,
        "base_model": os.path.abspath(a.base_model),
        "base_files": wh.hexdigest(),
        "prompts": ph.hexdigest(),
        "max_new_tokens": a.max_new_tokens,
        "max_prompt_tokens": a.max_prompt_tokens,
        "use_response": bool(a.use_response),
        "gen_batch_size": None if a.use_response else a.gen_batch_size,
        "dtype": a.dtype,
    }


def _tokenize(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=True)["input_ids"])


@torch.no_grad()
def _generate(
    model: PreTrainedModel,
    prompt_ids: list[list[int]],
    a: argparse.Namespace,
    pad_id: int,
    eos_id: int | None,
) -> list[list[int]]:
    """Greedy continuations, ``--gen-batch-size`` prompts at a time.

    Prompts of similar length are batched together (left padding), which
    keeps padding small; each continuation ends at its first EOS (kept).
    """
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    conts: list[list[int]] = [[] for _ in prompt_ids]
    bs = a.gen_batch_size
    batches = [order[i : i + bs] for i in range(0, len(order), bs)]
    for batch in progress(batches, a, desc="generate"):
        width = max(len(prompt_ids[i]) for i in batch)
        inp = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            p = prompt_ids[i]
            inp[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        # transformers types PreTrainedModel without GenerationMixin (causal LMs have it)
        out = model.generate(  # type: ignore[operator]
            inp.to(a.device),
            attention_mask=mask.to(a.device),
            max_new_tokens=a.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            if eos_id is not None and eos_id in new:
                new = new[: new.index(eos_id) + 1]
            conts[i] = new
    return conts


@torch.no_grad()
def build_distillation_data(
    a: argparse.Namespace, prompts: list[dict[str, Any]], log: Log | None = None
) -> dict[str, Any]:
    """Generate (or read) continuations and record hidden states; cached on disk.

    Returns ``{"key", "hidden_size", "vocab_size", "records": [...]}``; each
    record holds ``ids`` (int64 [G+1]: the last prompt token then the ``G``
    continuation tokens), ``hidden`` ([G+1, hidden] base last-layer states at
    those positions, post final norm), ``prompt_len`` and ``id``.
    """
    say = Reporter("train", log)
    cache_path = os.path.join(a.out, CACHE_NAME)
    key = _cache_key(a, prompts)
    if os.path.isfile(cache_path):
        try:
            cached = cast(
                "dict[str, Any]", torch.load(cache_path, map_location="cpu", weights_only=True)
            )
        except Exception as e:  # noqa: BLE001
            say(f"ignoring unreadable data cache {cache_path}: {e}")
            cached = None
        if cached is not None and cached.get("key") == key:
            say(f"using cached distillation data {cache_path} ({len(cached['records'])} sequences)")
            return cached
        if cached is not None:
            say(f"data cache {cache_path} was built with other settings; regenerating")

    dtype = torch_dtype(a.dtype, _DTYPES)
    tok, model = _load_base(a.base_model, dtype, a.device)
    cfg = model.config
    hidden_size = int(cfg.hidden_size)
    vocab_size = int(model.get_output_embeddings().weight.shape[0])
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompt_ids = []
    for r in prompts:
        pids = _tokenize(tok, r["prompt"])[-a.max_prompt_tokens :]
        if not pids:
            raise CommandError(f"--prompts: prompt {r['id']!r} tokenizes to nothing")
        prompt_ids.append(pids)
    t0 = time.time()
    if a.use_response:
        conts = [
            list(tok(r["response"], add_special_tokens=False)["input_ids"])[: a.max_new_tokens]
            for r in prompts
        ]
    else:
        conts = _generate(model, prompt_ids, a, pad_id, tok.eos_token_id)
    records = []
    checked = False
    for r, pids, rids in zip(prompts, prompt_ids, progress(conts, a, desc="hidden states")):
        full = torch.tensor([pids + rids], dtype=torch.long, device=a.device)
        out = model(full, output_hidden_states=True)
        h = out.hidden_states[-1][0]
        if not checked:
            # hidden_states[-1] must be the state the LM head reads (post final norm)
            ref = out.logits[0, -4:].float()
            got = model.get_output_embeddings()(h[-4:]).float()
            tol = 1e-3 if dtype == torch.float32 else 5e-2
            if not torch.allclose(got, ref, atol=tol * max(1.0, ref.abs().max().item()), rtol=tol):
                raise CommandError(
                    "base model: lm_head(hidden_states[-1]) != logits; this model's last hidden "
                    "state is not the LM-head input (unsupported architecture)"
                )
            checked = True
        plen = len(pids)
        records.append(
            {
                "id": r["id"],
                "prompt_len": plen,
                "ids": full[0, plen - 1 :].to("cpu", torch.int64).clone(),
                "hidden": h[plen - 1 :].to("cpu").clone(),
            }
        )
    gen = sum(len(r["ids"]) - 1 for r in records)
    say(
        f"distillation data: {len(records)} sequences, {gen} continuation tokens "
        f"({time.time() - t0:.1f}s)"
    )
    data = {"key": key, "hidden_size": hidden_size, "vocab_size": vocab_size, "records": records}
    os.makedirs(a.out, exist_ok=True)
    tmp = cache_path + ".tmp"
    torch.save(data, tmp)
    os.replace(tmp, cache_path)
    del model
    return data


def _examples(
    records: list[dict[str, Any]], n_predict: int, full_only: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Flatten records into (hidden [N, H], inputs [N, n], targets [N, n]).

    In a record, ``hidden[q]`` produced ``ids[q+1]`` (``q = 0`` is the last
    prompt position); inputs are ``ids[q+1 .. q+n]``, targets
    ``ids[q+2 .. q+1+n]`` (``-100`` past the end, inputs there 0). With
    ``full_only`` only positions with all ``n`` targets are kept (eval).
    """
    hs, xs, ys = [], [], []
    for r in records:
        ids, hid = r["ids"], r["hidden"]
        m = len(ids)
        last_q = m - 2 - n_predict if full_only else m - 3
        if last_q < 0:
            continue
        q = torch.arange(last_q + 1)
        off = torch.arange(n_predict + 1)
        pos = q[:, None] + 1 + off[None, :]  # [Q, n+1]: ids[q+1 .. q+1+n]
        valid = pos < m
        tokens = torch.where(valid, ids[pos.clamp(max=m - 1)], torch.zeros((), dtype=torch.int64))
        x = tokens[:, :n_predict]
        y = torch.where(valid[:, 1:], tokens[:, 1:], torch.full((), -100, dtype=torch.int64))
        hs.append(hid[: last_q + 1])
        xs.append(x)
        ys.append(y)
    if not hs:
        return None
    return torch.cat(hs), torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------- eval
@torch.no_grad()
def evaluate(
    spec: SpeculatorBase,
    hidden: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Per-position greedy acceptance of ``spec`` against the base tokens.

    Returns ``{"acceptance": [a_1..a_n], "mean_accepted_length": sum(a_j),
    "positions": N}`` where ``a_j`` = fraction of positions whose first ``j``
    draft tokens all equal the targets.
    """
    was_training = spec.training
    spec.eval()
    n = spec.n_predict
    dev = next(spec.parameters()).device
    accepted = torch.zeros(n, dtype=torch.float64)
    for s in range(0, hidden.shape[0], batch_size):
        h = hidden[s : s + batch_size].to(dev)
        d = draft(spec, h, inputs[s : s + batch_size, 0].to(dev)).cpu()
        ok = (d == targets[s : s + batch_size]).to(torch.int64).cumprod(dim=1)
        accepted += ok.sum(0).double()
    spec.train(was_training)
    total = max(1, hidden.shape[0])
    acc = [float(v) / total for v in accepted]
    return {
        "acceptance": acc,
        "mean_accepted_length": float(sum(acc)),
        "positions": int(hidden.shape[0]),
    }


# --------------------------------------------------------------------- utils
def _lr_lambda(a: argparse.Namespace) -> Callable[[int], float]:
    warm = a.warmup_steps if a.warmup_steps is not None else min(100, a.steps // 10)

    def f(step: int) -> float:
        if warm > 0 and step < warm:
            return float((step + 1) / warm)
        if a.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warm) / max(1, a.steps - warm))
        if a.schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * frac))
        else:
            decay = 1.0 - frac
        return float(a.min_lr_ratio + (1.0 - a.min_lr_ratio) * decay)

    return f


def _save_checkpoint(
    a: argparse.Namespace,
    spec: SpeculatorBase,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    history: list[dict[str, Any]],
    rng_gen: torch.Generator,
) -> None:
    ckpt = os.path.join(a.out, CKPT_DIR)
    tmp = ckpt + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    _save_spec(a, spec, tmp)
    torch.save(
        {
            "step": step,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": rng_gen.get_state(),
            "history": history,
            "args": {k: v for k, v in vars(a).items()},
            "fp32_weights": {k: v.detach().cpu() for k, v in spec.state_dict().items()},
        },
        os.path.join(tmp, STATE_NAME),
    )
    old = ckpt + ".old"
    if os.path.isdir(ckpt):
        if os.path.isdir(old):
            shutil.rmtree(old)
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    if os.path.isdir(old):
        shutil.rmtree(old)


def _save_spec(a: argparse.Namespace, spec: SpeculatorBase, path: str) -> None:
    if a.dtype == "bfloat16":
        save_speculator(copy.deepcopy(spec).to(torch.bfloat16), path)
    else:
        save_speculator(spec, path)


def _write_eval(
    a: argparse.Namespace, history: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    doc = dict(extra)
    doc["history"] = history
    doc["final"] = history[-1] if history else None
    tmp = os.path.join(a.out, EVAL_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, os.path.join(a.out, EVAL_NAME))


# --------------------------------------------------------------------- main
def run(a: argparse.Namespace, log: Log | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns the ``eval.json`` document.

    Progress lines go to ``log`` (``None``: stderr).

    Raises:
        CommandError: bad flags or input (the message names the flag).
    """
    say = Reporter("train", log)
    _check_args(a)
    weights = _head_weights(a)
    # validate the base model path before reading prompts/generating
    if not os.path.isdir(a.base_model):
        raise CommandError(f"--base-model: {a.base_model!r} is not a directory")
    if not os.path.isfile(os.path.join(a.base_model, "config.json")):
        raise CommandError(
            f"--base-model: {a.base_model!r} has no config.json (not a Hugging Face model directory)"
        )
    resume_from = resume_checkpoint(a, STATE_NAME)
    prompts = load_prompts(a.prompts, a.use_response, a.max_prompts)
    if len(prompts) < 2:
        raise CommandError(
            f"--prompts: need at least 2 prompts (train + held-out eval), got {len(prompts)}"
        )
    n_eval = a.num_eval if a.num_eval is not None else max(1, round(0.2 * len(prompts)))
    if n_eval >= len(prompts):
        raise CommandError(
            f"--num-eval {n_eval} leaves no training prompts ({len(prompts)} prompts)"
        )
    os.makedirs(a.out, exist_ok=True)
    apply_threads(a)
    torch.manual_seed(a.seed)

    data = build_distillation_data(a, prompts, log)
    # deterministic split: a seeded permutation, the last n_eval prompts are held out
    perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(a.seed)).tolist()
    recs = data["records"]
    eval_recs = [recs[i] for i in perm[len(prompts) - n_eval :]]
    train_recs = [recs[i] for i in perm[: len(prompts) - n_eval]]
    train = _examples(train_recs, a.n_predict, full_only=False)
    ev = _examples(eval_recs, a.n_predict, full_only=True)
    if train is None:
        raise CommandError(
            "no training positions: continuations are too short (raise --max-new-tokens)"
        )
    if ev is None:
        raise CommandError(
            "no eval positions: held-out continuations are shorter than n_predict+2 tokens"
        )
    say(
        f"{len(train_recs)} train prompts ({train[0].shape[0]} positions), "
        f"{len(eval_recs)} held-out prompts ({ev[0].shape[0]} positions)"
    )

    dev = torch.device(a.device)
    use_autocast = a.dtype == "bfloat16"
    ckpt = os.path.join(a.out, CKPT_DIR)
    state = None
    if resume_from is not None:
        spec = load_speculator(resume_from, dtype=torch.float32, device="cpu")
        state = torch.load(resume_from / STATE_NAME, map_location="cpu", weights_only=False)
        spec.load_state_dict(state["fp32_weights"])
        if spec.n_predict != a.n_predict:
            raise CommandError(
                f"--resume: checkpoint has n_predict={spec.n_predict}, --n-predict={a.n_predict}"
            )
        say.resuming(resume_from, state["step"])
    else:
        cfg = SpeculatorConfig(
            method="sum_lstm" if a.method == "lstm" else "mlp",
            n_predict=a.n_predict,
            input_hidden_dim=data["hidden_size"],
            inner_dim=a.inner_dim,
            vocab_size=data["vocab_size"],
            tie_weights=a.tie_weights,
            scale_input=a.scale_input,
            base_model_name_or_path=os.path.abspath(a.base_model),
            base_model_archs=_base_model_archs(a.base_model),
        )
        spec = build_speculator(cfg)
    spec.check_compatible(data["hidden_size"], data["vocab_size"])
    spec = spec.to(dev, torch.float32).train()

    opt = torch.optim.AdamW(spec.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(a))
    gen = torch.Generator().manual_seed(a.seed + 1)
    history: list[dict[str, Any]] = []
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"])
        history = list(state["history"])
        step = int(state["step"])

    th, tx, ty = (t.to(dev) for t in train)
    th = th.to(torch.bfloat16 if use_autocast else torch.float32)
    eh, ex, ey = ev
    eh = eh.float() if not use_autocast else eh.to(torch.bfloat16)
    wt = torch.tensor(weights, device=dev)
    extra = {
        "n_predict": a.n_predict,
        "method": a.method,
        "inner_dim": a.inner_dim,
        "train_prompts": len(train_recs),
        "eval_prompts": len(eval_recs),
        "eval_prompt_ids": [r["id"] for r in eval_recs],
        "train_positions": int(th.shape[0]),
        "eval_positions": int(eh.shape[0]),
        "base_model": os.path.abspath(a.base_model),
        "device": a.device,
        "dtype": a.dtype,
    }

    def do_eval(loss_val: float | None) -> dict[str, Any]:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_autocast):
            r = evaluate(spec, eh, ex, ey)
        r = {"step": step, "train_loss": loss_val, **r}
        history.append(r)
        acc = " ".join(f"{v:.3f}" for v in r["acceptance"])
        say.evaluation(
            step,
            f"acceptance per position [{acc}], mean accepted length "
            f"{r['mean_accepted_length']:.3f} ({r['positions']} positions)",
        )
        _write_eval(a, history, extra)
        return r

    if not history:
        do_eval(None)
    if step >= a.steps:
        say(f"checkpoint already at step {step} >= --steps {a.steps}; nothing to train")
    bar = progress(range(step, a.steps), a, desc="train", initial=step, total=a.steps)
    running = None
    last_loss = None
    for _ in bar:
        idx = torch.randint(0, th.shape[0], (a.batch_size,), generator=gen).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_autocast):
            logits = spec.forward_logits(th[idx], tx[idx])
        y = ty[idx]
        per_head = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            y.reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view_as(y)
        mask = (y != -100).float()
        head_loss = (per_head * mask).sum(0) / mask.sum(0).clamp(min=1.0)
        loss = (head_loss * wt).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(spec.parameters(), a.grad_clip)
        opt.step()
        sched.step()
        step += 1
        last_loss = float(loss.detach())
        running = last_loss if running is None else 0.95 * running + 0.05 * last_loss
        bar.set_postfix(loss=f"{running:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if step % a.eval_every == 0 or step == a.steps:
            do_eval(running)
            _save_checkpoint(a, spec, opt, sched, step, history, gen)
    bar.close()
    if not os.path.isfile(os.path.join(ckpt, STATE_NAME)) or (
        history and history[-1]["step"] != step
    ):
        do_eval(running)
        _save_checkpoint(a, spec, opt, sched, step, history, gen)
    _save_spec(a, spec, os.path.join(a.out, FINAL_DIR))
    say.done(
        f"speculator in {os.path.join(a.out, FINAL_DIR)}, eval in {os.path.join(a.out, EVAL_NAME)}",
        step,
    )
    doc = dict(extra)
    doc["history"] = history
    doc["final"] = history[-1]
    doc["step"] = step
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``error: ...`` and status 2 on bad input; the
    ``eval.json`` document on stdout."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
