"""GPU-only checks, skipped without CUDA (CI has none; run them on a GPU host:
`python -m pytest tests/test_gpu.py`, or `python tests/test_gpu.py` where
pytest is missing).

- Ulysses over NCCL on 2 GPUs: seq_to_head_qkv -> attention -> head_to_seq
  equals single-process attention (uneven lengths, GQA).
- The speculator's batched draft runs inside a captured CUDA graph and
  replays to the eager result.
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
NEED_1 = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# (name, Hq, Hkv, seq_lens) on 2 ranks
ULYSSES_CASES = [("mha_even", 8, 8, [64, 64]), ("mha_uneven", 8, 8, [37, 90]),
                 ("gqa_replicated", 4, 1, [50, 13]), ("gqa_split", 8, 2, [16, 80])]


def _ulysses_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).parent))
    from test_ulysses import causal_attention, full_inputs

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
        procs = [ctx.Process(target=_ulysses_worker, args=(r, 2, os.path.join(tmp, "init"), tmp))
                 for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=180)
        for r in range(2):
            res = json.loads(Path(tmp, f"rank{r}.json").read_text())
            assert res == {c[0]: "ok" for c in ULYSSES_CASES}, (r, res)


@NEED_1
def test_speculator_draft_replays_in_a_cuda_graph() -> None:
    from arctic_inference_core.speculator import SpeculatorConfig, build_speculator, draft

    for method in ("mlp", "sum_lstm"):
        cfg = SpeculatorConfig(n_predict=3, input_hidden_dim=64, inner_dim=64, vocab_size=512,
                               method=method)
        torch.manual_seed(0)
        model = build_speculator(cfg).cuda().to(torch.bfloat16).eval()
        hidden = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
        tokens = torch.randint(0, 512, (8,), device="cuda")
        out = torch.empty(8, 3, dtype=torch.int64, device="cuda")
        with torch.no_grad():
            eager = draft(model, hidden, tokens).clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm-up outside capture
                draft(model, hidden, tokens, out=out)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                draft(model, hidden, tokens, out=out)
            out.zero_()
            graph.replay()
            torch.cuda.synchronize()
        assert torch.equal(out, eager), method
        assert int(out.max()) < 512


@NEED_1
def test_graph_drafter_matches_eager_draft_at_every_batch_size() -> None:
    from arctic_inference_core.speculator import GraphDrafter, SpeculatorConfig, build_speculator, draft

    for method in ("mlp", "sum_lstm"):
        cfg = SpeculatorConfig(n_predict=3, input_hidden_dim=64, inner_dim=64, vocab_size=512, method=method)
        torch.manual_seed(0)
        model = build_speculator(cfg).cuda().to(torch.bfloat16).eval()
        drafter = GraphDrafter(model, max_batch_size=16)
        for b in (1, 3, 8, 13, 16, 3, 20):  # 20: above the largest graph, eager
            hidden = torch.randn(b, 64, device="cuda", dtype=torch.bfloat16)
            tokens = torch.randint(0, 512, (b,), device="cuda")
            for n in (3, 2):
                assert torch.equal(drafter(hidden, tokens, n), draft(model, hidden, tokens, n)), (method, b, n)
        assert drafter.num_graphs == 2 * 4  # buckets 1, 4, 8, 16 for n = 3 and 2


if __name__ == "__main__":  # GPU hosts without pytest
    for name, fn in [("ulysses_nccl", test_ulysses_nccl_matches_single_process_attention),
                     ("speculator_cuda_graph", test_speculator_draft_replays_in_a_cuda_graph),
                     ("graph_drafter", test_graph_drafter_matches_eager_draft_at_every_batch_size)]:
        fn()
        print(f"{name}: ok")
