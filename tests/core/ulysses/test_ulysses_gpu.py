"""Ulysses over NCCL on 2 GPUs (skipped without them; CI has none):
seq_to_head_qkv -> attention -> head_to_seq equals single-process attention
(uneven lengths, GQA). Run on a GPU host: `python -m pytest tests/core/ulysses/test_ulysses_gpu.py`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

NEED_2 = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")

# (name, Hq, Hkv, seq_lens) on 2 ranks
ULYSSES_CASES = [
    ("mha_even", 8, 8, [64, 64]),
    ("mha_uneven", 8, 8, [37, 90]),
    ("gqa_replicated", 4, 1, [50, 13]),
    ("gqa_split", 8, 2, [16, 80]),
]


def _ulysses_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).parent))
    from attention_reference import causal_attention, full_inputs

    from arctic_inference_core.ulysses import head_to_seq, seq_to_head_qkv

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    for idx, (name, hq, hkv, lens) in enumerate(ULYSSES_CASES):
        try:
            q, k, v = full_inputs(300 + idx, sum(lens), hq, hkv)
            ref = causal_attention(q, k, v).float()
            sl = slice(sum(lens[:rank]), sum(lens[: rank + 1]))
            qh, kh, vh = seq_to_head_qkv(q[sl].cuda(), k[sl].cuda(), v[sl].cuda(), seq_lens=lens)
            attn = causal_attention(qh.cpu(), kh.cpu(), vh.cpu()).float().cuda()
            out = head_to_seq(attn, seq_lens=lens)
            torch.testing.assert_close(out.cpu(), ref[sl], rtol=1e-5, atol=1e-5)
            results[name] = "ok"
        except Exception as e:  # reported per case to the parent
            results[name] = repr(e)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


@NEED_2
def test_ulysses_nccl_matches_single_process_attention() -> None:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_ulysses_worker, args=(r, 2, os.path.join(tmp, "init"), tmp))
            for r in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=180)
        for r in range(2):
            res = json.loads(Path(tmp, f"rank{r}.json").read_text())
            assert res == {c[0]: "ok" for c in ULYSSES_CASES}, (r, res)
