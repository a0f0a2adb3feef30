"""Ulysses sequence parallelism in vLLM (extras switch on), on CPU vLLM with
2 and 4 worker processes (Gloo): greedy tokens and top logprobs equal to
SP=1, alone and combined with TP=2, with chunked prefill mixing prefills and
decodes; each rank embeds only its slice of a step's tokens, attends over all
of them for its share of the heads, and holds a KV cache of that share.
Start-up refuses impossible or unsupported combinations with a clear message,
and logs the layout (``vllm serve`` with the flag: test_shift_parallel.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arctic_inference_vllm.envs import EXTRAS_ENV as SWITCH

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.vllm

# the shared engine run (sp_engine.py, on sys.path through tests/vllm/conftest.py)
from sp_engine import run  # noqa: E402


def assert_same_outputs(got: dict, want: dict) -> None:
    assert got["tokens"] == want["tokens"]
    for a, b in zip(got["logprobs"], want["logprobs"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4), (a, b)


def assert_rows_split(rows: list[list[list[int]]], tp: int, sp: int) -> None:
    """Per forward pass: every rank embeds ceil(T/SP) of the step's T tokens
    and attends over all T."""
    passes = {len(r) for r in rows}
    assert len(passes) == 1 and passes.pop() > 0
    for step in zip(*rows):
        embedded = {e for e, _ in step}
        attended = {a for _, a in step}
        assert len(embedded) == 1 and len(attended) == 1, step
        (e,), (t,) = embedded, attended
        assert e == -(-t // sp), step
    assert max(t for _, t in rows[0]) > 1  # prefill steps were split


@pytest.fixture(scope="module")
def sp1_tiny(tiny_model: str, switch_on) -> dict:
    return run(tiny_model, sp=1)


def test_sp2_matches_sp1_with_replicated_kv_heads(tiny_model: str, sp1_tiny: dict) -> None:
    """2 query heads, 1 K/V head over 2 ranks: the K/V head is replicated."""
    got = run(tiny_model, sp=2)
    assert_same_outputs(got, sp1_tiny)
    assert [r["worker"] for r in got["layout"]] == ["UlyssesCPUWorker"] * 2
    assert [(r["sp"], r["sp_rank"], r["tp"], r["heads"], r["kv_heads"]) for r in got["layout"]] == [
        (2, 0, 1, 1, 1),
        (2, 1, 1, 1, 1),
    ]
    assert_rows_split(got["rows"], tp=1, sp=2)
    # the reference ran every token on its one rank, all heads
    assert sp1_tiny["layout"][0]["heads"] == 2
    assert all(e == t for e, t in sp1_tiny["rows"][0])


def test_tp2_sp2_matches_sp1(tiny4: str, tiny4_sp1: dict, switch_on) -> None:
    """4 ranks: TP ranks 0, 1 of copy 0 are global ranks 0, 1; each attends
    over 1 query and 1 K/V head, and holds a KV cache of that one head."""
    want = tiny4_sp1
    got = run(tiny4, sp=2, tp=2)
    assert_same_outputs(got, want)
    assert [(r["sp_rank"], r["tp"], r["heads"], r["kv_heads"]) for r in got["layout"]] == [
        (0, 2, 1, 1),
        (0, 2, 1, 1),
        (1, 2, 1, 1),
        (1, 2, 1, 1),
    ]
    kv_shape, ref_shape = got["layout"][0]["kv_cache_shape"], want["layout"][0]["kv_cache_shape"]
    assert want["layout"][0]["kv_heads"] == 2 and kv_shape != ref_shape  # 1 head, not 2
    assert_rows_split(got["rows"], tp=2, sp=2)


def test_sp2_with_suffix_decoding_matches_sp1(tiny_model: str, sp1_tiny: dict) -> None:
    """Suffix decoding drafts on every rank alike; verifying its drafts runs
    through the same split forward and keeps SP=1's greedy tokens."""
    got = run(tiny_model, sp=2, spec={"method": "suffix", "num_speculative_tokens": 8})
    assert got["tokens"] == sp1_tiny["tokens"]
    assert got["accepted"] > 0
    assert_rows_split(got["rows"], tp=1, sp=2)


# ------------------------------------------------------------ start-up checks


def config_dir(tmp_path: Path, heads: int, kv_heads: int) -> str:
    from transformers import LlamaConfig

    LlamaConfig(
        hidden_size=64 * heads,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_hidden_layers=1,
        intermediate_size=64,
        vocab_size=256,
    ).save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize(
    "heads, kv_heads, tp, sp, match",
    [
        (2, 1, 1, 3, "2 attention heads cannot be split over 3 ranks"),
        (8, 8, 2, 3, "8 attention heads cannot be split over 6 ranks"),
        (6, 3, 1, 2, "3 heads cannot be split evenly over 2 ranks"),
        (12, 3, 1, 2, "3 heads cannot be split evenly over 2 ranks"),
    ],
)
def test_heads_that_do_not_split_are_refused(
    tmp_path: Path, switch_on, heads: int, kv_heads: int, tp: int, sp: int, match: str
) -> None:
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=config_dir(tmp_path, heads, kv_heads),
        tensor_parallel_size=tp,
        ulysses_sequence_parallel_size=sp,
    )
    with pytest.raises(ValueError, match=match):
        args.create_engine_config()


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"pipeline_parallel_size": 2}, "pipeline_parallel_size"),
        ({"speculative_config": {"method": "eagle", "model": "x"}}, "speculative_config"),
        ({"speculative_config": {"model": "draft-model"}}, "speculative_config"),
        ({"worker_cls": "my.Worker"}, "worker_cls"),
        ({"distributed_executor_backend": "ray"}, "distributed_executor_backend"),
    ],
)
def test_unsupported_combinations_are_refused(
    tiny_model: str, switch_on, extra: dict, match: str
) -> None:
    from vllm.engine.arg_utils import EngineArgs

    with pytest.raises(ValueError, match=match):
        EngineArgs(
            model=tiny_model, ulysses_sequence_parallel_size=2, **extra
        ).create_engine_config()


def test_more_ranks_than_gpus_is_refused() -> None:
    from arctic_inference_vllm.ulysses.rules import check_combination

    args = SimpleNamespace(tensor_parallel_size=2)
    with pytest.raises(ValueError, match="needs 4 GPUs .TP x SP., but 2 are visible"):
        check_combination(args, 2, gpus=2)
    check_combination(args, 2, gpus=4)
    check_combination(args, 8, gpus=None)  # CPU: no device limit


def test_bad_sizes_are_refused(tiny_model: str, switch_on) -> None:
    from vllm.engine.arg_utils import EngineArgs

    with pytest.raises(ValueError, match="must be >= 1"):
        EngineArgs(model=tiny_model, ulysses_sequence_parallel_size=0)
    with pytest.raises(TypeError, match="must be an int"):
        EngineArgs(model=tiny_model, ulysses_sequence_parallel_size="2")
    with pytest.raises(ValueError, match="conflicts with additional_config"):
        EngineArgs(
            model=tiny_model,
            ulysses_sequence_parallel_size=2,
            additional_config={"arctic_inference": {"ulysses_sequence_parallel_size": 4}},
        )


def test_sp1_leaves_the_config_alone(tiny_model: str, switch_on) -> None:
    from vllm.engine.arg_utils import EngineArgs

    config = EngineArgs(model=tiny_model, ulysses_sequence_parallel_size=1).create_engine_config()
    assert config.parallel_config.tensor_parallel_size == 1
    assert not config.parallel_config.worker_cls.startswith("arctic_inference_vllm")


def test_sp2_config(tiny_model: str, switch_on, caplog: pytest.LogCaptureFixture) -> None:
    """TP x SP ranks, our worker class, eager; the EngineArgs keep the user's
    values; the start-up log says so. (``vllm serve`` with the flag:
    test_documented_example.py::test_cli_form.)"""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=tiny_model, ulysses_sequence_parallel_size=2)
    with caplog.at_level("INFO", logger="vllm.arctic_inference"):
        config = args.create_engine_config()
    assert "Ulysses sequence parallelism: SP=2 x TP=1 on 2 ranks" in caplog.text
    assert config.parallel_config.world_size == 2
    assert (
        config.parallel_config.worker_cls
        == "arctic_inference_vllm.ulysses.workers.UlyssesCPUWorker"
    )
    assert config.model_config.enforce_eager
    assert config.additional_config["arctic_inference"]["ulysses_sequence_parallel_size"] == 2
    assert (args.tensor_parallel_size, args.enforce_eager) == (1, False)


def test_the_cli_flag_reaches_the_engine_args(tiny_model: str, switch_on) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    assert "--ulysses-sequence-parallel-size" in parser.format_help()
    args = parser.parse_args(["--model", tiny_model, "--ulysses-sequence-parallel-size", "2"])
    engine_args = AsyncEngineArgs.from_cli_args(args)
    assert engine_args.additional_config == {
        "arctic_inference": {"ulysses_sequence_parallel_size": 2}
    }


def test_vllm_serve_refuses_a_size_that_does_not_split(tiny_model: str) -> None:
    """The real CLI, in a fresh process: the flag is known and checked before
    any engine starts."""
    cli = Path(__file__).resolve().parents[3] / "bench" / "benchlib" / "vllm_cli.py"
    out = subprocess.run(
        [sys.executable, str(cli), "serve", tiny_model, "--ulysses-sequence-parallel-size", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, SWITCH: "1"},
    )
    assert out.returncode != 0
    assert "2 attention heads cannot be split over 3 ranks" in out.stdout + out.stderr


def test_switch_off_in_a_fresh_process_names_the_switch(tiny_model: str) -> None:
    """Without the switch, vLLM has no flag, and the additional_config form
    is refused instead of silently running on one rank."""
    script = textwrap.dedent(f"""
        from vllm.engine.arg_utils import EngineArgs
        try:
            EngineArgs(model={tiny_model!r}, ulysses_sequence_parallel_size=2)
        except TypeError as e:
            print("NO FLAG", e)
        args = EngineArgs(model={tiny_model!r}, additional_config={{
            "arctic_inference": {{"ulysses_sequence_parallel_size": 2}}}})
        try:
            args.create_engine_config()
        except ValueError as e:
            print("REFUSED", e)
    """)
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert "NO FLAG" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    refused = next((x for x in out.stdout.splitlines() if x.startswith("REFUSED")), "")
    assert SWITCH in refused and "ulysses_sequence_parallel_size=2" in refused, out.stdout[-2000:]


# -------------------------------------------------------- the head-split rule


def rank_kv_heads(heads: int, kv_heads: int, tp: int, sp: int, t: int, s: int) -> int:
    """Reference: how many distinct K/V heads the query heads of rank (t, s)
    use, with vLLM's TP split (K/V heads replicated when fewer than TP)."""
    per_rank = heads // (tp * sp)
    first = t * (heads // tp) + s * per_rank
    return len({q // (heads // kv_heads) for q in range(first, first + per_rank)})


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from([1, 2, 4, 8]), st.integers(1, 16))
def test_head_split_matches_the_reference(heads: int, kv_heads: int, tp: int, sp: int) -> None:
    from arctic_inference_vllm.ulysses.rules import check_model_heads

    # models vLLM's TP accepts: GQA groups, and K/V heads split or replicated over TP
    if heads % kv_heads or (kv_heads >= tp and kv_heads % tp) or (kv_heads < tp and tp % kv_heads):
        return
    if heads % tp:
        return
    try:
        q_rank, kv_rank = check_model_heads(heads, kv_heads, tp, sp)
    except ValueError:
        kv = max(1, kv_heads // tp)  # a TP rank's K/V heads
        assert heads % (tp * sp) or (kv % sp if kv >= sp else sp % kv)
        return
    assert q_rank * tp * sp == heads
    for t in range(tp):
        for s in range(sp):
            assert rank_kv_heads(heads, kv_heads, tp, sp, t, s) == kv_rank
