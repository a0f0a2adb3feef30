"""The speculator's batched draft on a CUDA GPU (skipped without one; CI has
none): it runs inside a captured CUDA graph and replays to the eager result.
Run on a GPU host: `python -m pytest tests/core/speculator/test_speculator_gpu.py`.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

NEED_1 = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@NEED_1
def test_speculator_draft_replays_in_a_cuda_graph() -> None:
    from arctic_inference_core.speculator import SpeculatorConfig, build_speculator, draft

    for method in ("mlp", "sum_lstm"):
        cfg = SpeculatorConfig(
            n_predict=3, input_hidden_dim=64, inner_dim=64, vocab_size=512, method=method
        )
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
    from arctic_inference_core.speculator import (
        GraphDrafter,
        SpeculatorConfig,
        build_speculator,
        draft,
    )

    for method in ("mlp", "sum_lstm"):
        cfg = SpeculatorConfig(
            n_predict=3, input_hidden_dim=64, inner_dim=64, vocab_size=512, method=method
        )
        torch.manual_seed(0)
        model = build_speculator(cfg).cuda().to(torch.bfloat16).eval()
        drafter = GraphDrafter(model, max_batch_size=16)
        for b in (1, 3, 8, 13, 16, 3, 20):  # 20: above the largest graph, eager
            hidden = torch.randn(b, 64, device="cuda", dtype=torch.bfloat16)
            tokens = torch.randint(0, 512, (b,), device="cuda")
            for n in (3, 2):
                assert torch.equal(drafter(hidden, tokens, n), draft(model, hidden, tokens, n)), (
                    method,
                    b,
                    n,
                )
        assert drafter.num_graphs == 2 * 4  # buckets 1, 4, 8, 16 for n = 3 and 2
