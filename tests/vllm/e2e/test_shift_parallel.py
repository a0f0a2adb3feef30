"""Shift parallelism on real vLLM (CPU, Gloo): one deployment switches per
step between Ulysses SP and TP over all ranks, on one KV cache
(docs/ulysses.md, "Shift parallelism").

The engines run 24-token steps with two sequences at a time and a threshold
of 12, so one run has SP steps (prefill chunks, mixed with decodes), TP
steps with prefill tokens (a short prompt's prefill beside a decode) and
pure-decode TP steps; a request prefilled on one path decodes on the other.
"""

from __future__ import annotations

import gc
import os
from types import SimpleNamespace

import pytest

from arctic_inference_vllm.envs import EXTRAS_ENV as SWITCH

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.vllm

# the prompts of the shared SP=1 reference (tiny4_sp1, tests/vllm/conftest.py)
from sp_engine import NEW_TOKENS, PROMPTS  # noqa: E402

THRESHOLD = 12
STEP = dict(max_num_batched_tokens=24, max_num_seqs=2)
INSPECTOR = "arctic_inference_vllm.diagnostics.ShiftInspector"


def run(model: str, sp: int, tp: int) -> dict:
    """Greedy tokens and top-3 logprobs of PROMPTS under shift parallelism,
    and what each rank holds and ran."""
    from cpu_engine import cpu_llm
    from vllm import SamplingParams

    llm = cpu_llm(
        model,
        sp * tp,
        tensor_parallel_size=tp,
        enable_prefix_caching=False,
        ulysses_sequence_parallel_size=sp,
        enable_shift_parallel=True,
        shift_parallel_threshold=THRESHOLD,
        worker_extension_cls=INSPECTOR,
        **STEP,
    )
    try:
        got: dict = {"layout": llm.collective_rpc("shift_layout")}
        llm.collective_rpc("shift_record")
        outs = llm.generate(
            PROMPTS,
            SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=3),
            use_tqdm=False,
        )
        got["tokens"] = [list(o.outputs[0].token_ids) for o in outs]
        got["texts"] = [o.outputs[0].text for o in outs]
        got["logprobs"] = [
            [sorted(v.logprob for v in step.values())[-3:] for step in o.outputs[0].logprobs]
            for o in outs
        ]
        got["steps"] = llm.collective_rpc("shift_steps")
        got["caches"] = llm.collective_rpc("shift_kv_caches")
        got["weights"] = llm.collective_rpc("shift_weight_bytes")
        return got
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        del llm
        gc.collect()


def assert_close(got: list, want: list) -> None:
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4), (a, b)


@pytest.fixture(scope="module")
def sp1(tiny4_sp1: dict, switch_on) -> dict:
    """SP=1 on one rank, the Ulysses tests' reference (other steps: 4
    sequences at a time, the same 24 tokens; greedy tokens and logprobs do
    not depend on the batch)."""
    return tiny4_sp1


def test_tp2_sp2_shift_matches_sp1(tiny4: str, sp1: dict) -> None:
    """4 ranks: greedy tokens and logprobs equal SP=1 while steps switch paths
    both ways; each rank holds head block r in both models and both paths'
    attention writes the one KV cache."""
    got = run(tiny4, sp=2, tp=2)
    assert got["tokens"] == sp1["tokens"]
    assert_close(got["logprobs"], sp1["logprobs"])

    # rank r = t * SP + s: SP group of TP rank t; SP model sharded over TP=2,
    # vLLM's (TP path) model over all 4 ranks, rank order kept
    layout = [(r["rank"], r["sp_rank"], r["sp_model_tp"], r["tp_model_tp"]) for r in got["layout"]]
    assert layout == [
        (0, 0, [2, 0], [4, 0]),
        (1, 1, [2, 0], [4, 1]),
        (2, 0, [2, 1], [4, 2]),
        (3, 1, [2, 1], [4, 3]),
    ]
    for r in got["layout"]:
        assert r["heads"] == [1, 1] and r["kv_heads"] == [1, 1]  # 4 and 2 heads over 4 ranks
        assert r["same_query_heads"] is True  # the same head block in both models

    steps = got["steps"]
    assert all(s == steps[0] for s in steps)  # every rank chose alike
    paths = [tuple(s) for s in steps[0]]
    assert all((p == "tp") == (n <= THRESHOLD) for p, n, _ in paths)
    assert any(p == "sp" and reqs > 1 for p, _, reqs in paths)  # SP: prefill beside a decode
    assert any(p == "tp" and n > reqs for p, n, reqs in paths)  # TP: prefill tokens
    assert any(p == "tp" and n == reqs for p, n, reqs in paths)  # TP: pure decode
    for rank in got["caches"]:
        assert rank, "no attention layers recorded"
        for layer, c in rank.items():
            assert c["tp"] == c["sp"] == [c["cache"]], layer  # one cache tensor, both paths
            assert c["bound"], layer
    # the TP model's weights, sharded 4 ways, are half the SP model's (2 ways),
    # less what both replicate (norms)
    for w in got["weights"]:
        assert 0.45 < w["tp"] / w["sp"] < 0.55, w


# vllm serve with the flags: tests/vllm/e2e/test_documented_example.py::test_cli_form
# (SP=2 + --enable-shift-parallel, both paths run, greedy tokens against a reference).


# ------------------------------------------------------------ start-up checks


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"enable_shift_parallel": True}, ValueError, "needs ulysses_sequence_parallel_size > 1"),
        (
            {"ulysses_sequence_parallel_size": 1, "enable_shift_parallel": True},
            ValueError,
            "needs ulysses_sequence_parallel_size > 1",
        ),
        (
            {"ulysses_sequence_parallel_size": 2, "shift_parallel_threshold": 64},
            ValueError,
            "has no effect without enable_shift_parallel",
        ),
        (
            {
                "ulysses_sequence_parallel_size": 2,
                "enable_shift_parallel": True,
                "shift_parallel_threshold": 4096,
                "max_num_batched_tokens": 2048,
            },
            ValueError,
            "every step would take the TP path",
        ),  # fmt: skip
        (
            {
                "ulysses_sequence_parallel_size": 2,
                "enable_shift_parallel": True,
                "shift_parallel_threshold": 64,
                "max_cudagraph_capture_size": 128,
            },
            ValueError,
            "CUDA graph capture size 128 is above shift_parallel_threshold=64",
        ),  # fmt: skip
        (
            {
                "ulysses_sequence_parallel_size": 2,
                "enable_shift_parallel": True,
                "shift_parallel_threshold": 64,
                "pipeline_parallel_size": 2,
            },
            ValueError,
            "pipeline_parallel_size",
        ),  # fmt: skip
    ],
)
def test_refused_at_startup(tiny4: str, switch_on, kwargs: dict, error: type, match: str) -> None:
    from vllm.engine.arg_utils import EngineArgs

    with pytest.raises(error, match=match):
        EngineArgs(model=tiny4, **kwargs).create_engine_config()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"shift_parallel_threshold": 0}, ValueError, "must be >= 1"),
        ({"shift_parallel_threshold": "512"}, TypeError, "must be an int"),
        ({"enable_shift_parallel": "yes"}, TypeError, "must be True or False"),
        (
            {
                "shift_parallel_threshold": 64,
                "additional_config": {"arctic_inference": {"shift_parallel_threshold": 128}},
            },
            ValueError,
            "conflicts with additional_config",
        ),
    ],
)
def test_bad_values_are_refused(
    tiny4: str, switch_on, kwargs: dict, error: type, match: str
) -> None:
    from vllm.engine.arg_utils import EngineArgs

    with pytest.raises(error, match=match):
        EngineArgs(model=tiny4, ulysses_sequence_parallel_size=2, **kwargs)


def test_shift_config(tiny4: str, switch_on) -> None:
    """TP x SP ranks and our workers, as for Ulysses, but not forced eager
    (the TP path keeps vLLM's compilation and graphs); the default
    threshold is Arctic Inference's 512."""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=tiny4,
        ulysses_sequence_parallel_size=2,
        enable_shift_parallel=True,
        max_num_batched_tokens=2048,
    )
    config = args.create_engine_config()
    assert config.parallel_config.world_size == 2
    assert config.parallel_config.worker_cls.endswith("UlyssesCPUWorker")
    assert not config.model_config.enforce_eager
    ours = config.additional_config["arctic_inference"]
    assert ours == {"ulysses_sequence_parallel_size": 2, "enable_shift_parallel": True}
    from arctic_inference_vllm.settings import adapter_settings

    assert adapter_settings(config).shift_parallel_threshold == 512


def test_the_cli_flags_reach_the_engine_args(tiny4: str, switch_on) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    text = parser.format_help()
    assert "--enable-shift-parallel" in text and "--shift-parallel-threshold" in text
    argv = ["--model", tiny4, "--ulysses-sequence-parallel-size", "2"]
    plain = AsyncEngineArgs.from_cli_args(parser.parse_args(argv))
    assert "enable_shift_parallel" not in plain.additional_config["arctic_inference"]
    shift = AsyncEngineArgs.from_cli_args(
        parser.parse_args([*argv, "--enable-shift-parallel", "--shift-parallel-threshold", "64"])
    )
    assert shift.additional_config == {
        "arctic_inference": {
            "ulysses_sequence_parallel_size": 2,
            "enable_shift_parallel": True,
            "shift_parallel_threshold": 64,
        }
    }


def test_switch_off_names_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from arctic_inference_vllm.ulysses.rules import require_switch

    monkeypatch.delenv(SWITCH, raising=False)
    args = SimpleNamespace(additional_config={"arctic_inference": {"enable_shift_parallel": True}})
    with pytest.raises(ValueError, match=f"enable_shift_parallel=True needs .*{SWITCH}=1"):
        require_switch(args)


def test_the_step_rule() -> None:
    from arctic_inference_vllm.ulysses.shift_rules import path_for

    assert [path_for(n, 512) for n in (1, 511, 512, 513, 8192)] == ["tp"] * 3 + ["sp"] * 2
