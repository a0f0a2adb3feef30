"""All-to-all bandwidth of Ulysses sequence parallelism (arctic_inference_core.ulysses).

What it measures
----------------
For each model shape and total sequence length (split evenly over the ranks),
the median wall time (over ``--iters`` timed iterations after ``--warmup``; per
iteration the slowest rank's time, taken with an all-reduce MAX) of

* ``baseline``: a plain ``dist.all_to_all_single`` of a pre-packed buffer of
  the same size as the query tensor (the lower bound on communication);
* ``seq_to_head(q)``: packing + the all-to-all (what an engine pays for q);
* ``head_to_seq(o)``: the inverse for the attention output (+ unpacking);
* ``seq_to_head_qkv``: q, k and v in one fused exchange, K/V heads replicated
  by the GQA rule where there are fewer K/V heads than ranks.

Bandwidth columns follow the nccl-tests convention for all-to-all:
``algbw = bytes per rank / time`` and ``busbw = algbw * (W - 1) / W`` (the part
that really crosses links). A Markdown table goes to
``<out-dir>/ulysses_bw-<backend>-w<W>[-<tag>].md`` (rank 0 writes it).

How to run
----------
GPUs (NCCL), one process per GPU::

    torchrun --nproc-per-node 8 bench/ulysses_bw.py --models llama-8b llama-70b \\
        --seq-lens 4096 16384 65536 131072 --dtype bf16

CPU smoke test (Gloo, spawns the processes itself)::

    python bench/ulysses_bw.py --spawn 2 --models tiny --seq-lens 256 1024 \\
        --dtype fp32 --iters 3 --warmup 1 --tag smoke

Limits: Gloo numbers measure CPU memory copies, not a network; use only the
NCCL numbers to judge the kernels. The benchmark does not overlap compute.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp
from benchlib.tables import median, table

from arctic_inference_core.ulysses import (
    expand_kv_heads_for,
    head_to_seq,
    seq_to_head,
    seq_to_head_qkv,
)

# num query heads, num K/V heads, head_dim
MODELS = {
    "tiny": (8, 2, 16),
    "llama-8b": (32, 8, 128),
    "llama-70b": (64, 8, 128),
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["llama-8b", "llama-70b"], choices=sorted(MODELS))
    p.add_argument(
        "--seq-lens",
        nargs="+",
        type=int,
        default=[4096, 8192, 16384, 32768, 65536, 131072],
        help="total sequence lengths (tokens over all ranks)",
    )
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"])
    p.add_argument(
        "--spawn",
        type=int,
        default=0,
        help="start this many local processes (no torchrun; Gloo smoke tests)",
    )
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--tag", default="", help="suffix for the output file name")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, iters: int, warmup: int) -> float:
    """Median over iterations of the slowest rank's seconds."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=device)
        dist.all_reduce(dt, op=dist.ReduceOp.MAX)
        times.append(float(dt.item()))
    return median(times)


def run(args: argparse.Namespace) -> None:
    world, rank = dist.get_world_size(), dist.get_rank()
    backend = str(dist.get_backend())
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dtype = DTYPES[args.dtype]
    esize = torch.tensor([], dtype=dtype).element_size()
    rows = []
    for model in args.models:
        hq, hkv, d = MODELS[model]
        if hq % world:
            if rank == 0:
                print(f"skip {model}: {hq} query heads not divisible by {world} ranks")
            continue
        reps = expand_kv_heads_for(world, hkv, hq)
        for total in args.seq_lens:
            if total % world:
                if rank == 0:
                    print(f"skip seq {total}: not divisible by {world}")
                continue
            local = total // world
            g = torch.Generator(device=device).manual_seed(rank)
            q = torch.randn(local, hq, d, generator=g, device=device).to(dtype)
            k = torch.randn(local, hkv, d, generator=g, device=device).to(dtype)
            v = torch.randn(local, hkv, d, generator=g, device=device).to(dtype)
            o = torch.randn(total, hq // world, d, generator=g, device=device).to(dtype)
            flat_in = torch.empty(local * hq * d, dtype=dtype, device=device).normal_()
            flat_out = torch.empty_like(flat_in)
            qkv_heads = hq + 2 * hkv * reps
            cases = [
                (
                    "baseline all_to_all_single",
                    local * hq * d,
                    lambda fo=flat_out, fi=flat_in: dist.all_to_all_single(fo, fi),
                ),
                ("seq_to_head(q)", local * hq * d, lambda q=q: seq_to_head(q)),
                ("head_to_seq(o)", local * hq * d, lambda o=o: head_to_seq(o)),
                (
                    f"seq_to_head_qkv (kv x{reps})",
                    local * qkv_heads * d,
                    lambda q=q, k=k, v=v: seq_to_head_qkv(q, k, v),
                ),
            ]
            base = None
            for name, numel, fn in cases:
                sec = _time(fn, device, args.iters, args.warmup)
                nbytes = numel * esize
                algbw = nbytes / sec / 1e9
                if base is None:
                    base = algbw
                rows.append(
                    (
                        model,
                        total,
                        local,
                        nbytes / 2**20,
                        name,
                        sec * 1e3,
                        algbw,
                        algbw * (world - 1) / world,
                        algbw / base * 100,
                    )
                )
                if rank == 0:
                    print(
                        f"{model:10s} seq {total:7d} {name:32s} {sec * 1e3:9.3f} ms "
                        f"algbw {algbw:8.2f} GB/s",
                        flush=True,
                    )
            del q, k, v, o, flat_in, flat_out
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if rank == 0:
        write_table(args, rows, world, backend, device)


def write_table(args, rows, world: int, backend: str, device: torch.device) -> None:
    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    lines = [
        "# Ulysses all-to-all bandwidth",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- backend: {backend}, world size: {world}, device: {dev}",
        f"- torch {torch.__version__}, dtype {args.dtype}, iterations {args.iters} "
        f"(median of the slowest rank), warmup {args.warmup}",
        f"- command: `{' '.join(sys.argv)}`",
        "- algbw = bytes per rank / time; busbw = algbw * (W-1)/W; "
        "'% base' = algbw relative to the plain all_to_all_single of the q-sized buffer",
    ]
    header = [
        "model",
        "total seq",
        "tokens/rank",
        "MiB/rank",
        "op",
        "median ms",
        "algbw GB/s",
        "busbw GB/s",
        "% base",
    ]
    cells = [
        [m, total, local, f"{mib:.2f}", name, f"{ms:.3f}", f"{alg:.2f}", f"{bus:.2f}", f"{pct:.0f}"]
        for m, total, local, mib, name, ms, alg, bus, pct in rows
    ]
    lines += ["", *table(header, cells, "lrrrlrrrr")]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    path = out / f"ulysses_bw-{backend}-w{world}{tag}.md"
    path.write_text(stamped_markdown("\n".join(lines) + "\n", version_stamp()))
    print(f"wrote {path}")


def _backend(args: argparse.Namespace) -> str:
    if args.backend != "auto":
        return args.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def _spawned(rank: int, world: int, init_file: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        _backend(args), init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        os.environ["LOCAL_RANK"] = str(rank)
        run(args)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.spawn:
        import tempfile

        import torch.multiprocessing as mp

        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(
                _spawned, args=(args.spawn, os.path.join(tmp, "init"), args), nprocs=args.spawn
            )
        return
    dist.init_process_group(_backend(args))  # env:// from torchrun
    try:
        run(args)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
