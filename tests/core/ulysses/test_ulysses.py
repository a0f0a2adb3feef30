"""Ulysses sequence parallelism (arctic_inference_core.ulysses) on Gloo/CPU.

One group of spawned processes per world size (2 and 4) runs every scenario
once (process start-up dominates the cost) and reports per-scenario results;
each scenario is then its own pytest test. The reference is single-process
causal attention over the whole sequence: the parallel result (seq_to_head on
q, k, v -> attention over this rank's heads on the whole sequence ->
head_to_seq) must match it on every rank's slice of the sequence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with Gloo is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402
from attention_reference import D, causal_attention, full_inputs  # noqa: E402

from arctic_inference_core.ulysses import (  # noqa: E402
    UlyssesWork,
    expand_kv_heads_for,
    head_to_seq,
    seq_to_head,
    seq_to_head_qkv,
)
from arctic_inference_core.ulysses import core as _core  # noqa: E402

# (name, Hq, Hkv, seq_lens) per world size; seq_lens None = equal lengths of 6.
ATTN_CASES = {
    2: [
        ("mha_even", 4, 4, None),
        ("mha_uneven", 4, 4, [3, 7]),
        ("mha_empty_rank", 4, 4, [0, 5]),
        ("gqa_hq4_hkv1_replicated", 4, 1, [4, 9]),
        ("gqa_hq8_hkv2_split", 8, 2, [5, 2]),
    ],
    4: [
        ("mha_even", 8, 8, None),
        ("mha_uneven", 8, 8, [5, 0, 9, 2]),
        ("gqa_hq8_hkv2_replicated", 8, 2, [3, 6, 1, 4]),
        ("gqa_hq4_hkv1_replicated", 4, 1, None),
        ("gqa_hq8_hkv4_split", 8, 4, [2, 7, 3, 3]),
    ],
}
MODES = ["sync", "async", "fused", "fused_async", "fallback"]
OTHER = ["roundtrip", "roundtrip_bf16_uneven", "layout_exact", "reference_sensitive", "negatives"]


def scenario_names(world: int) -> list[str]:
    names = [f"attn/{c[0]}/{m}" for c in ATTN_CASES[world] for m in MODES]
    return names + OTHER


# ----------------------------------------------------------------- worker side


def _attn_case(world: int, rank: int, idx: int, hq: int, hkv: int, lens_arg, mode: str) -> None:
    lens = lens_arg if lens_arg is not None else [6] * world
    total, start = sum(lens), sum(lens[:rank])
    q, k, v = full_inputs(100 + idx, total, hq, hkv)
    ref = causal_attention(q, k, v)
    sl = slice(start, start + lens[rank])
    ql, kl, vl = q[sl], k[sl], v[sl]
    if mode.startswith("fused"):
        res = seq_to_head_qkv(ql, kl, vl, seq_lens=lens_arg, async_op=mode.endswith("async"))
        if mode.endswith("async"):
            assert isinstance(res, UlyssesWork)
            res = res.wait()
        qh, kh, vh = res
    else:
        reps = expand_kv_heads_for(world, hkv, hq)
        async_op = mode == "async"
        _core._FORCE_LIST_ALL_TO_ALL = mode == "fallback"
        try:
            outs = [
                seq_to_head(t, seq_lens=lens_arg, num_kv_replicas=r, async_op=async_op)
                for t, r in ((ql, None), (kl, reps), (vl, reps))
            ]
            if async_op:
                assert all(isinstance(o, UlyssesWork) for o in outs)
                outs = [o.wait() for o in outs]
        finally:
            _core._FORCE_LIST_ALL_TO_ALL = False
        qh, kh, vh = outs
    assert qh.shape == (total, hq // world, D), qh.shape
    assert kh.shape == vh.shape == (total, max(hkv // world, 1), D), kh.shape
    attn = causal_attention(qh, kh, vh).float()
    if mode == "async":
        work = head_to_seq(attn, seq_lens=lens_arg, async_op=True)
        assert isinstance(work, UlyssesWork)
        out = work.wait()
        assert work.wait() is out
    else:
        _core._FORCE_LIST_ALL_TO_ALL = mode == "fallback"
        try:
            out = head_to_seq(attn, seq_lens=lens_arg)
        finally:
            _core._FORCE_LIST_ALL_TO_ALL = False
    assert out.shape == (lens[rank], hq, D), out.shape
    torch.testing.assert_close(out, ref[sl].float(), rtol=1e-5, atol=1e-5)


def _roundtrip(world: int, rank: int, dtype: torch.dtype, lens_arg) -> None:
    lens = lens_arg if lens_arg is not None else [5] * world
    g = torch.Generator().manual_seed(7 + rank)
    x = torch.randn(lens[rank], 2 * world, D, generator=g).to(dtype)
    y = seq_to_head(x, seq_lens=lens_arg)
    back = head_to_seq(y, seq_lens=lens_arg)
    assert back.dtype == dtype and torch.equal(back, x)


def _layout_exact(world: int, rank: int) -> None:
    lens = [2 + 3 * r for r in range(world)]
    h = 3 * world
    full = torch.arange(sum(lens) * h * D, dtype=torch.float32).view(sum(lens), h, D)
    start = sum(lens[:rank])
    y = seq_to_head(full[start : start + lens[rank]], seq_lens=lens)
    assert torch.equal(y, full[:, rank * 3 : (rank + 1) * 3]), "wrong head slice or sequence order"
    # replicated K/V: Hkv = 1 -> every rank gets head 0; Hkv = world/2 -> rank r gets r // 2
    if world % 2 == 0:
        kv = full[start : start + lens[rank], : world // 2]
        got = seq_to_head(kv, seq_lens=lens, num_kv_replicas=2)
        assert torch.equal(got, full[:, rank // 2 : rank // 2 + 1])


def _reference_sensitive(world: int, rank: int) -> None:
    """The attention check must catch a wrong layout: swapping the sequence order
    of ranks or using another rank's heads changes the result."""
    hq, lens = 2 * world, [3 + r for r in range(world)]
    total, start = sum(lens), sum(lens[:rank])
    q, k, v = full_inputs(5, total, hq, hq)
    ref = causal_attention(q, k, v)
    sl = slice(start, start + lens[rank])
    qh, kh, vh = (seq_to_head(t[sl], seq_lens=lens) for t in (q, k, v))
    good = head_to_seq(causal_attention(qh, kh, vh).float(), seq_lens=lens)
    torch.testing.assert_close(good, ref[sl].float(), rtol=1e-5, atol=1e-5)
    # wrong layout 1: sequence chunks concatenated in reversed rank order
    chunks = list(torch.split(q, lens))[::-1], list(torch.split(k, lens))[::-1]
    vrev = list(torch.split(v, lens))[::-1]
    bad_full = causal_attention(torch.cat(chunks[0]), torch.cat(chunks[1]), torch.cat(vrev))
    assert not torch.allclose(bad_full.flip(0), ref.flip(0), atol=1e-3)
    # wrong layout 2: this rank's queries with the next rank's K/V heads
    nxt = (rank + 1) % world
    h = hq // world
    wrong = causal_attention(qh, k[:, nxt * h : (nxt + 1) * h], v[:, nxt * h : (nxt + 1) * h])
    assert not torch.allclose(wrong, causal_attention(qh, kh, vh), atol=1e-3)


def _expect(exc: type, fragments: list[str], fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except exc as e:
        for f in fragments:
            assert f in str(e), f"{f!r} not in message {str(e)!r}"
        return
    raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")


def _negatives(world: int, rank: int) -> None:
    x = torch.zeros(4, world, D)
    bad_h = world + 1
    _expect(ValueError, [str(bad_h), str(world)], seq_to_head, torch.zeros(4, bad_h, D))
    _expect(ValueError, ["3 dimensions"], seq_to_head, torch.zeros(4, world * D))
    _expect(TypeError, ["torch.Tensor"], seq_to_head, [[1.0]])
    _expect(ValueError, ["entries", str(world)], seq_to_head, x, seq_lens=[4] * (world + 1))
    wrong = [4] * world
    wrong[rank] = 5
    _expect(ValueError, ["seq_lens[", "5"], seq_to_head, x, seq_lens=wrong)
    _expect(ValueError, [">= 0"], seq_to_head, x, seq_lens=[4] * (world - 1) + [-1])
    _expect(TypeError, ["seq_lens[0]"], seq_to_head, x, seq_lens=[4.0] * world)
    _expect(ValueError, ["num_kv_replicas"], seq_to_head, x, num_kv_replicas=0)
    _expect(ValueError, ["divisible"], head_to_seq, torch.zeros(world * 3 + 1, 1, D))
    _expect(ValueError, ["sum(seq_lens)"], head_to_seq, torch.zeros(7, 1, D), seq_lens=[1] * world)
    q = torch.zeros(4, 2 * world, D)
    _expect(
        ValueError,
        ["head_dim mismatch", str(D), str(D + 1)],
        seq_to_head_qkv,
        q,
        torch.zeros(4, world, D + 1),
        torch.zeros(4, world, D + 1),
    )
    _expect(
        ValueError,
        ["same shape"],
        seq_to_head_qkv,
        q,
        torch.zeros(4, world, D),
        torch.zeros(4, 2 * world, D),
    )
    if world == 4:  # 3 K/V heads cannot be spread over 4 ranks
        _expect(
            ValueError,
            ["3", "4"],
            seq_to_head_qkv,
            torch.zeros(4, 12, D),
            torch.zeros(4, 3, D),
            torch.zeros(4, 3, D),
        )
    # the group is still in step after all the rejected calls
    _roundtrip(world, rank, torch.float32, None)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    results: dict[str, str] = {}

    def run(name: str, fn, *args) -> None:
        try:
            fn(*args)
            results[name] = "ok"
        except Exception:  # reported to the parent, one test per scenario
            results[name] = traceback.format_exc()

    for idx, (name, hq, hkv, lens) in enumerate(ATTN_CASES[world]):
        for mode in MODES:
            run(f"attn/{name}/{mode}", _attn_case, world, rank, idx, hq, hkv, lens, mode)
    run("roundtrip", _roundtrip, world, rank, torch.float32, None)
    run(
        "roundtrip_bf16_uneven",
        _roundtrip,
        world,
        rank,
        torch.bfloat16,
        [3 * r + 1 for r in range(world)],
    )
    run("layout_exact", _layout_exact, world, rank)
    run("reference_sensitive", _reference_sensitive, world, rank)
    run("negatives", _negatives, world, rank)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


# ------------------------------------------------------------------ test side

_RESULTS: dict[int, dict[int, dict[str, str]]] = {}


def _run_world(world: int) -> dict[int, dict[str, str]]:
    if world not in _RESULTS:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = mp.get_context("spawn")
            init_file = os.path.join(tmp, "init")
            procs = [
                ctx.Process(target=_worker, args=(r, world, init_file, tmp)) for r in range(world)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=120)
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
            res = {}
            for r in range(world):
                f = Path(tmp, f"rank{r}.json")
                res[r] = json.loads(f.read_text()) if f.exists() else {}
            _RESULTS[world] = res
    return _RESULTS[world]


@pytest.mark.parametrize("world,scenario", [(w, s) for w in (2, 4) for s in scenario_names(w)])
def test_distributed_scenario(world: int, scenario: str) -> None:
    per_rank = _run_world(world)
    for rank in range(world):
        status = per_rank[rank].get(scenario, "missing (worker crashed or timed out)")
        assert status == "ok", f"world {world} rank {rank} {scenario}:\n{status}"


# -------------------------------------------------------- single-process tests


@pytest.mark.parametrize(
    "world,hkv,expected",
    [(2, 1, 2), (4, 2, 2), (4, 1, 4), (8, 2, 4), (2, 2, 1), (4, 8, 1), (1, 3, 1), (8, 8, 1)],
)
def test_expand_kv_heads_for(world: int, hkv: int, expected: int) -> None:
    assert expand_kv_heads_for(world, hkv) == expected


@pytest.mark.parametrize(
    "args,fragments",
    [
        ((4, 3), ["3", "4"]),
        ((4, 6), ["6", "4"]),
        ((8, 3), ["3", "8"]),
        ((4, 2, 6), ["6", "4"]),
        ((2, 4, 6), ["6", "4"]),
        ((0, 1), ["world"]),
    ],
)
def test_expand_kv_heads_for_rejects(args: tuple[int, ...], fragments: list[str]) -> None:
    with pytest.raises(ValueError) as ei:
        expand_kv_heads_for(*args)
    for f in fragments:
        assert f in str(ei.value)


@pytest.mark.parametrize(
    "world,hq,hkv", [(2, 4, 1), (4, 8, 2), (8, 16, 2), (4, 8, 4), (2, 8, 8), (4, 4, 1)]
)
def test_gqa_rule_gives_each_rank_its_query_heads_kv(world: int, hq: int, hkv: int) -> None:
    """The send buffer for destination rank r holds exactly the K/V heads that
    query heads [r*Hq/W, (r+1)*Hq/W) use under q // (Hq // Hkv)."""
    reps = expand_kv_heads_for(world, hkv, hq)
    hk_out = hkv * reps // world
    kv = torch.arange(hkv, dtype=torch.float32).view(1, hkv, 1).expand(3, hkv, 2).contiguous()
    buf = torch.empty(world, 3, hk_out, 2)
    _core._fill_send(buf, kv, world, hk_out, reps)
    group = hq // hkv
    for r in range(world):
        q_heads = range(r * hq // world, (r + 1) * hq // world)
        needed = sorted({qh // group for qh in q_heads})
        got = buf[r, 0, :, 0].long().tolist()
        assert got == needed, (r, got, needed)
        # and the local mapping stays standard GQA
        local_group = (hq // world) // hk_out
        for i, qh in enumerate(q_heads):
            assert got[i // local_group] == qh // group


def test_requires_initialized_process_group() -> None:
    if dist.is_initialized():
        pytest.skip("a default process group exists in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        seq_to_head(torch.zeros(2, 2, 2))


def test_top_level_package_does_not_import_torch() -> None:
    code = "import sys, arctic_inference_core; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
