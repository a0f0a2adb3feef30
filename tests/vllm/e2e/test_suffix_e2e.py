"""vLLM's native `method: "suffix"` running on arctic_inference_core: greedy
outputs identical to no speculation, acceptance visible in vLLM's metrics,
edge cases (max_model_len, aborts, chunked prefill) without leaks."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm

SUFFIX = {"method": "suffix", "num_speculative_tokens": 8}
# the greedy tokens without speculation: the plain_greedy fixture (tests/vllm/conftest.py)
from greedy_reference import SUFFIX_PROMPTS as PROMPTS  # noqa: E402


def greedy(max_tokens: int = 64):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


@pytest.fixture(scope="module")
def plain_outputs(plain_greedy: dict[str, list[int]]) -> list[list[int]]:
    return [plain_greedy[p] for p in PROMPTS]


@pytest.fixture(scope="module")
def suffix_llm(make_llm, tiny_model: str, plain_outputs):
    # Created after the plain engine is gone: engines in one process share
    # vLLM's metrics registry, and a later engine replaces its collectors.
    llm = make_llm(tiny_model, SUFFIX, max_num_batched_tokens=64)  # forces chunked prefill
    yield llm
    del llm


def assert_released(llm) -> None:
    """The proposer learns that requests ended from the next engine step
    (vLLM tells it nothing sooner), so run one short request, then expect
    only that one to be left active."""
    llm.generate(["q"], greedy(2))
    (state,) = llm.collective_rpc("suffix_cache_state")
    assert state["proposer"] == "ArcticSuffixDecodingProposer"
    assert state["active"] <= 1, state


def spec_metrics(llm) -> dict[str, float]:
    out = {}
    for m in llm.get_metrics():
        if m.name.startswith("vllm:spec_decode") and hasattr(m, "value"):
            out[m.name] = m.value
    return out


def test_runs_on_our_proposer(suffix_llm) -> None:
    (state,) = suffix_llm.collective_rpc("suffix_cache_state")
    assert state["proposer"] == "ArcticSuffixDecodingProposer"


def test_greedy_output_identical_to_no_speculation(suffix_llm, plain_outputs) -> None:
    outs = [list(o.outputs[0].token_ids) for o in suffix_llm.generate(PROMPTS, greedy())]
    assert outs == plain_outputs
    m = spec_metrics(suffix_llm)
    assert m["vllm:spec_decode_num_drafts"] > 0
    assert m["vllm:spec_decode_num_accepted_tokens"] > 0  # repetitive prompts: drafts accepted
    (state,) = suffix_llm.collective_rpc("suffix_cache_state")
    assert state["cached"] >= len(PROMPTS)
    assert_released(suffix_llm)


def test_greedy_requests_beside_a_sampled_one(suffix_llm, plain_outputs) -> None:
    # A batch that is not all greedy: vLLM's CPU expand kernel gave every
    # request garbage temperatures there (patches/cpu_expand_kernel.py).
    from vllm import SamplingParams

    # (No seed: vLLM 0.32 on CPU fails a seeded request whose prompt is
    # prefilled in chunks, CPU generators having no offset to rewind.)
    sampled = SamplingParams(temperature=0.8, n=2, max_tokens=64)
    outs = suffix_llm.generate(PROMPTS + [PROMPTS[0]], [greedy()] * len(PROMPTS) + [sampled])
    assert [list(o.outputs[0].token_ids) for o in outs[:-1]] == plain_outputs
    assert len(outs[-1].outputs) == 2
    assert_released(suffix_llm)


def test_mixed_prefill_and_decode_batches(suffix_llm) -> None:
    # One long prompt (prefilled in chunks of 64) next to short ones decoding.
    long_prompt = "0123456789abcdef" * 20
    prompts = [long_prompt, "abab", "hello hello hello", long_prompt[:100]]
    outs = suffix_llm.generate(prompts, greedy(40))
    assert [len(o.outputs[0].token_ids) for o in outs] == [40] * 4
    assert_released(suffix_llm)


def test_requests_near_max_model_len(suffix_llm) -> None:
    from vllm import SamplingParams

    prompt = "abc" * 165  # 495 byte tokens of 512
    out = suffix_llm.generate(
        [prompt], SamplingParams(temperature=0, max_tokens=17, ignore_eos=True)
    )
    assert len(out[0].outputs[0].token_ids) == 17  # up to the very last position
    assert_released(suffix_llm)


def test_aborted_requests_are_released(suffix_llm) -> None:
    from vllm import SamplingParams

    engine = suffix_llm.llm_engine
    for i in range(3):
        engine.add_request(
            f"abort-{i}", "abcabcabcabc", SamplingParams(max_tokens=200, ignore_eos=True)
        )
    for _ in range(4):  # a few decode steps with drafting
        engine.step()
    engine.abort_request([f"abort-{i}" for i in range(3)])
    while engine.has_unfinished_requests():
        engine.step()
    assert_released(suffix_llm)


def test_empty_prompt_is_rejected_cleanly(suffix_llm) -> None:
    # vLLM's own validation answers (its error type differs across versions).
    with pytest.raises(Exception, match="prompt cannot be empty"):
        suffix_llm.generate([{"prompt_token_ids": []}], greedy(4))
    assert len(suffix_llm.generate(["ok"], greedy(4))[0].outputs[0].token_ids) == 4
