"""Bad suffix settings fail at start-up in the front end with vLLM-style
messages (before any engine process starts)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"suffix_decoding_min_token_prob": 1.5}, "min_token_prob"),
        ({"suffix_decoding_min_token_prob": -0.1}, "min_token_prob"),
        ({"suffix_decoding_max_tree_depth": 0}, "max_tree_depth"),
        ({"suffix_decoding_max_tree_depth": -3}, "max_tree_depth"),
        ({"suffix_decoding_max_spec_factor": -1.0}, "max_spec_factor"),
        ({"suffix_decoding_max_cached_requests": -2}, "max_cached_requests"),
        ({"num_speculative_tokens": 2.5}, "num_speculative_tokens"),
    ],
)
def test_bad_suffix_settings_fail_at_startup(tiny_model: str, spec: dict, match: str) -> None:
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=tiny_model,
        max_model_len=256,
        enforce_eager=True,
        speculative_config={"method": "suffix", **spec},
    )
    with pytest.raises(Exception, match=match):
        args.create_engine_config()


def test_good_settings_build_a_config(tiny_model: str) -> None:
    from vllm.engine.arg_utils import EngineArgs

    cfg = EngineArgs(
        model=tiny_model,
        max_model_len=256,
        enforce_eager=True,
        speculative_config={"method": "suffix"},
    ).create_engine_config()
    assert cfg.speculative_config.method == "suffix"
    # num_speculative_tokens defaults to the tree depth, as in vLLM.
    assert cfg.speculative_config.num_speculative_tokens == 24


def test_bad_adapter_settings_are_rejected() -> None:
    from types import SimpleNamespace

    from arctic_inference_vllm.settings import AdapterSettings, adapter_settings

    ok = adapter_settings(SimpleNamespace(additional_config={}))
    assert ok == AdapterSettings(
        suffix_step_token_budget=None,
        suffix_step_cost_curve=None,
        suffix_num_threads=1,
        suffix_share_active_responses=True,
        swiftkv_fast_prefill=True,
        ulysses_sequence_parallel_size=1,
    )  # None: automatic
    for bad, match in [
        ({"arctic_inference": {"nope": 1}}, "unknown keys"),
        ({"arctic_inference": {"suffix_step_token_budget": -1}}, "suffix_step_token_budget"),
        ({"arctic_inference": {"suffix_num_threads": 0}}, "suffix_num_threads"),
        ({"arctic_inference": {"suffix_step_cost_curve": 3}}, "suffix_step_cost_curve"),
        ({"arctic_inference": {"suffix_share_active_responses": 1}}, "suffix_share_active"),
        ({"arctic_inference": {"swiftkv_fast_prefill": 1}}, "swiftkv_fast_prefill"),
        ({"arctic_inference": {"ulysses_sequence_parallel_size": 0}}, "ulysses_sequence_parallel"),
        (
            {"arctic_inference": {"ulysses_sequence_parallel_size": "2"}},
            "ulysses_sequence_parallel",
        ),
        ({"arctic_inference": 3}, "JSON object"),
    ]:
        with pytest.raises(ValueError, match=match):
            adapter_settings(SimpleNamespace(additional_config=bad))


def test_step_cap_follows_the_cuda_graph_sizes(tiny_model: str, tmp_path) -> None:
    """A step verifies at most as many tokens as the largest CUDA graph (vLLM
    settles the sizes after the proposer is built, so the policy reads them
    each step); without graphs, the scheduler's token budget; a user's budget
    wins. A measured cost curve given in the settings is the policy's start."""
    import json

    from vllm.config import CUDAGraphMode

    from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer

    cfg = _suffix_engine_config(tiny_model, 8)
    proposer = ArcticSuffixDecodingProposer(cfg)
    assert proposer.policy.step_cap() == cfg.scheduler_config.max_num_batched_tokens
    cfg.compilation_config.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    cfg.compilation_config.max_cudagraph_capture_size = 495
    assert proposer.policy.step_cap() == 495
    assert proposer.policy.fixed_budget is None and not proposer.policy.cost.known("full")
    curve = tmp_path / "curve.json"
    curve.write_text(
        json.dumps(
            {"format": "arctic-step-cost/1", "shapes": {"full": {"tokens": [1], "ms": [5.0]}}}
        )
    )
    cfg.additional_config = {
        "arctic_inference": {"suffix_step_token_budget": 100, "suffix_step_cost_curve": str(curve)}
    }
    policy = ArcticSuffixDecodingProposer(cfg).policy
    assert policy.step_cap() == 100 and policy.cost.known("full")
    cfg.additional_config = {"arctic_inference": {"suffix_step_cost_curve": str(tmp_path / "no")}}
    with pytest.raises(ValueError, match="cannot read step cost curve"):
        ArcticSuffixDecodingProposer(cfg)


def _suffix_engine_config(tiny_model: str, k: int):
    """The engine config of a small CPU engine with suffix decoding, k tokens."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(
        model=tiny_model,
        max_model_len=256,
        enforce_eager=True,
        speculative_config={"method": "suffix", "num_speculative_tokens": k},
    ).create_engine_config()


def _drive(proposer, prompts: list[list[int]], steps: list[list[list[int]]]) -> list[list[int]]:
    """Feed prompts, then per step one sampled list per request; returns the
    last drafts. The policy's clock advances by what its cost model says the
    step it chose costs (a simulated engine that agrees with the model)."""
    import numpy as np

    from arctic_inference_vllm.suffix.step_cost import step_shape

    policy = proposer.policy
    clock = [0.0]
    policy.clock = lambda: clock[0]
    k = proposer.num_speculative_tokens
    n = len(prompts)
    ids = [f"r{i}" for i in range(n)]
    tokens = np.zeros((n, 256), dtype=np.int32)
    lens = np.array([len(p) for p in prompts])
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    drafts: list[list[int]] = []
    for sampled in steps:
        for i, s in enumerate(sampled):
            tokens[i, lens[i] : lens[i] + len(s)] = s
            lens[i] += len(s)
        batch = SimpleNamespace(
            req_ids=ids,
            num_tokens_no_spec=lens.copy(),
            token_ids_cpu=tokens,
            req_id_to_index={r: i for i, r in enumerate(ids)},
        )
        drafts = proposer.propose(proposer.num_speculative_tokens, batch, sampled)
        size = n + sum(len(d) for d in drafts)
        mode, graph = policy.graph()
        shape = step_shape(mode, graph, size, all(len(d) == k for d in drafts))
        clock[0] += float(policy.cost.cost(shape, size))
    return drafts


def _two_shapes(full_ms: float, piecewise_ms: float):
    """A cost model of flat full-graph, piecewise and eager steps."""
    from arctic_inference_vllm.suffix.step_cost import StepCostModel

    cost = StepCostModel()
    for n in range(1, 600):
        cost.observe("full", n, full_ms / 1e3)
        cost.observe("piecewise", n, piecewise_ms / 1e3)
        cost.observe("eager", n, piecewise_ms / 1e3)
    return cost


def test_small_decode_steps_are_padded_to_full_cuda_graphs(tiny_model: str) -> None:
    """With full decode graphs cheaper than piecewise steps, a step whose
    uniform size (k + 1 tokens per request) fits the largest graph gets
    drafts of exactly k tokens, starting with the drafts it would have had;
    bigger steps, a smaller user budget, costlier full graphs or no full
    graphs leave the drafts alone."""
    from vllm.config import CUDAGraphMode

    from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer

    k = 8
    cfg = _suffix_engine_config(tiny_model, k)
    prompts = [[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6], [1, 2, 3, 4], [40, 41, 42, 40, 41]]
    steps = [[[7], [10], [42]], [[8, 9], [11], [40]]]

    def run(full_ms: float = 5.0, piecewise_ms: float = 10.0) -> list[list[int]]:
        proposer = ArcticSuffixDecodingProposer(cfg)
        proposer.policy.cost = _two_shapes(full_ms, piecewise_ms)
        return _drive(proposer, prompts, steps)

    plain = run()  # no graphs, flat costs: the drafts as the tree gives them
    assert any(0 < len(d) < k for d in plain) and any(len(d) == 0 for d in plain), plain

    cfg.compilation_config.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    cfg.compilation_config.max_cudagraph_capture_size = 3 * (k + 1)
    padded = run()
    assert [len(d) for d in padded] == [k, k, k]
    assert all(p[: len(d)] == d for p, d in zip(padded, plain))
    assert padded[0][:5] == [5, 6, 7, 8, 9]  # the loop continues past the spec-factor limit
    assert run(full_ms=30.0) == plain  # full graphs that cost more than they pay

    cfg.compilation_config.max_cudagraph_capture_size = 3 * (k + 1) - 1  # one token short
    assert run() == plain
    cfg.compilation_config.max_cudagraph_capture_size = 512
    cfg.additional_config = {"arctic_inference": {"suffix_step_token_budget": 3 * (k + 1) - 1}}
    assert run() == plain  # a smaller budget wins
    cfg.additional_config = {}
    cfg.compilation_config.cudagraph_mode = CUDAGraphMode.PIECEWISE  # no full graphs
    assert run() == plain


def test_live_sharing_lets_a_request_draft_from_a_running_one(tiny_model: str) -> None:
    """suffix_share_active_responses: B drafts what A has produced so far,
    while A still runs; without it A's output is drafted from only once A
    stops."""

    from arctic_inference_vllm.suffix.proposer import ArcticSuffixDecodingProposer

    cfg = _suffix_engine_config(tiny_model, 8)
    # A writes 10 11 12 13 14; B's text then ends with 10 11 (its prompt
    # holds neither), so only A's running response continues it.
    prompts = [[1, 2, 3], [5, 1, 2, 3]]
    steps = [[[10], [10]], [[11, 12, 13, 14], [11]]]

    def b_draft(share: bool) -> list[int]:
        cfg.additional_config = {"arctic_inference": {"suffix_share_active_responses": share}}
        proposer = ArcticSuffixDecodingProposer(cfg)
        proposer.policy.cost = _two_shapes(5.0, 5.0)  # flat: the drafts as the tree gives them
        return _drive(proposer, prompts, steps)[1]

    assert b_draft(True) == [12, 13]  # a 2-token match drafts 2 tokens
    assert b_draft(False) == []
    cfg.additional_config = {}


def test_full_cuda_graphs_where_the_user_left_the_mode_unset(tiny_model: str) -> None:
    """patches/suffix_graph_mode.py: on CUDA, suffix decoding and the arctic
    method get cudagraph_mode FULL when the user set none; an explicit mode,
    another method or a CPU stay as they are."""
    from vllm.config import CUDAGraphMode
    from vllm.engine.arg_utils import EngineArgs

    from arctic_inference_vllm.patches.suffix_graph_mode import choose_graph_mode
    from arctic_inference_vllm.suffix.graph_mode import ARCTIC_PROPOSER, preferred_graph_mode

    def config(method: str = "suffix"):
        spec = {"method": method, "num_speculative_tokens": 4}
        if method == "ngram":
            spec |= {"prompt_lookup_min": 2, "prompt_lookup_max": 3}
        return EngineArgs(
            model=tiny_model, max_model_len=256, enforce_eager=True, speculative_config=spec
        ).create_engine_config()

    cfg = config()
    assert cfg.compilation_config.cudagraph_mode == CUDAGraphMode.NONE  # CPU: built unchanged
    cfg.compilation_config.cudagraph_mode = None  # as vLLM has it before its defaults
    assert choose_graph_mode(cfg, on_cuda=False) is None
    assert cfg.compilation_config.cudagraph_mode is None
    assert choose_graph_mode(cfg, on_cuda=True) == "FULL"
    assert cfg.compilation_config.cudagraph_mode == CUDAGraphMode.FULL
    cfg.compilation_config.cudagraph_mode = CUDAGraphMode.PIECEWISE  # the user's choice wins
    assert choose_graph_mode(cfg, on_cuda=True) is None
    assert cfg.compilation_config.cudagraph_mode == CUDAGraphMode.PIECEWISE
    other = config("ngram")
    other.compilation_config.cudagraph_mode = None
    assert choose_graph_mode(other, on_cuda=True) is None
    assert preferred_graph_mode("custom_class", ARCTIC_PROPOSER, True) == "FULL"
    assert preferred_graph_mode("custom_class", "pkg.Other", True) is None
