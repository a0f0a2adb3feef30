"""The served-run predictor (benchlib/suffix/predict.py) on synthetic traces
and cost curves, and vllm_compare.py's round, identity and peer helpers; no
vLLM engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchlib import engine
from benchlib.suffix.predict import CostFile, Level, Request, predict, predict_none

from arctic_inference_vllm.suffix.step_cost import StepCostModel


def costs(spec_ms_per_token: float = 0.0, graph_mode: str = "NONE") -> CostFile:
    spec = StepCostModel()
    for n in range(1, 300):
        spec.observe("eager", n, (10.0 + spec_ms_per_token * (n - 1)) / 1e3)
    return CostFile(spec, [1, 2], [10.0, 20.0], [100, 300], [50.0, 150.0], graph_mode, 0)


def repetitive(n: int = 3, length: int = 64) -> Level:
    """Requests whose outputs repeat their prompts: suffix drafts pass."""
    reqs = []
    for i in range(n):
        unit = [10 * i + j + 1 for j in range(8)]
        reqs.append(Request(unit * 4, (unit * (length // 8 + 1))[:length]))
    return Level(1, reqs)


def test_no_speculation_costs_prefill_plus_one_step_per_token() -> None:
    level = Level(2, [Request([1] * 100, [5] * 3), Request([1] * 100, [6] * 5)], "waves")
    out = predict_none(level, costs())
    # prefill of 200 tokens (linear through the two points: 100 ms), then
    # steps 1-2 with both requests (20 ms each), steps 3-4 with one (10 ms)
    assert out.steps == 4 and out.tokens == 8
    assert out.seconds == pytest.approx((100 + 20 + 20 + 10 + 10) / 1e3)


def test_steady_load_starts_a_request_as_soon_as_one_finishes() -> None:
    reqs = [Request([1] * 100, [5] * 3), Request([1] * 100, [6] * 5), Request([1] * 100, [7] * 3)]
    c = costs()
    c.none_ms = [10.0, 12.0]  # a step of two requests costs less than two steps of one
    steady = predict_none(Level(2, reqs), c)
    # 100 ms prefill; two steps of both; the first is done and the third
    # joins (50 ms prefill); two steps of the two
    assert steady.steps == 4 and steady.tokens == 11
    assert steady.seconds == pytest.approx((100 + 12 + 12 + 50 + 12 + 12) / 1e3)
    # waves: the third waits for the second, which finishes alone
    waves = predict_none(Level(2, reqs, "waves"), c)
    assert waves.steps == 6
    assert waves.seconds == pytest.approx((100 + 12 + 12 + 10 + 10 + 50 + 10 + 10) / 1e3)
    with pytest.raises(ValueError, match="unknown load"):
        Level(2, reqs, "bursts")


def test_suffix_decoding_pays_where_drafts_pass_and_steps_are_flat() -> None:
    rows = {r["drafter"]: r for r in predict([repetitive()], costs(), k=16, depth=32)}
    assert rows["suffix"]["tokens_per_s"] > 2 * rows["none"]["tokens_per_s"]
    assert rows["suffix"]["mean_tokens_per_step"] > 3
    assert rows["suffix"]["steps"] < rows["none"]["steps"] / 2


def test_suffix_decoding_stops_drafting_where_tokens_cost_a_step() -> None:
    # outputs that never repeat (drafts fail) and every draft token costs as
    # much as a step's fixed part: the policy learns to stop drafting
    reqs = [Request(list(range(1, 40)) * 2, [200 + j for j in range(120)])]
    level = Level(1, reqs)
    rows = {r["drafter"]: r for r in predict([level], costs(10.0), k=16, depth=32)}
    assert rows["suffix"]["tokens_per_s"] > 0.8 * rows["none"]["tokens_per_s"]


def test_cost_file_round_trip(tmp_path: Path) -> None:
    c = costs(1.0)
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(c.to_json()))
    again = CostFile.load(path)
    assert again.none_rows == [1, 2] and again.prefill_seconds(200) == pytest.approx(0.1)
    assert float(again.spec.cost("eager", 51)) == pytest.approx(0.060, rel=2e-2)
    with pytest.raises(ValueError):
        CostFile.load(tmp_path / "missing.json")
    path.write_text("{}")
    with pytest.raises(ValueError):
        CostFile.load(path)


def test_reference_suffix_runs_without_this_adapter() -> None:
    env = engine.worker_env("suffix-ai", "/opt/arctic")
    assert env["PYTHONPATH"].split(":")[0] == "/opt/arctic"
    allowed = env["VLLM_PLUGINS"].split(",")
    assert "arctic_inference_core" not in allowed and "arctic_inference" not in allowed
    assert set(allowed) - {""} == set(engine.other_plugins())
    assert engine.spec_config("suffix-ai", 32, 64) == engine.spec_config("suffix", 32, 64)
    with pytest.raises(ValueError, match="--arctic-path"):
        engine.worker_env("suffix-ai")
    with pytest.raises(ValueError, match="unknown method"):
        engine.spec_config("medusa", 32, 64)


def test_vllm_compare_rounds_identity_and_ratios(load_script) -> None:
    vc = load_script("vllm_compare")
    assert vc.round_order(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert vc.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert vc.first_difference([1, 2, 3], [1, 4, 3]) == 1
    assert vc.first_difference([1, 2], [1, 2, 3]) == 2

    def res(method: str, rnd: int, tps: float, outputs: list[list[int]]) -> dict:
        return {
            "method": method,
            "round": rnd,
            "concurrency": 1,
            "tokens_per_s": tps,
            "outputs": outputs,
            "drafts": 0,
            "accepted": 0,
            "draft_tokens": 0,
        }

    results = [
        res("none", 0, 100.0, [[1, 2], [3, 4]]),
        res("suffix", 0, 150.0, [[1, 2], [3, 5]]),
        res("none", 1, 50.0, [[1, 2], [3, 4]]),
        res("suffix", 1, 100.0, [[1, 2], [3, 4]]),
    ]
    same = vc.identity(results)[("suffix", 1)]
    assert (same["same"], same["n"], same["diffs"]) == (3, 4, [1])
    s = vc.summarize(results)[("suffix", 1)]
    assert s["ratio"] == pytest.approx(1.75) and s["ratio_range"] == (1.5, 2.0)
    assert sorted(vc.ratio_between(results, "suffix", "none", 1)) == [1.5, 2.0]
    md = vc.render(
        results,
        {
            "model": "m",
            "dtype": "float32",
            "prompts": "p",
            "num_prompts": 2,
            "max_tokens": 2,
            "k": 32,
            "depth": 64,
            "machine": "CPU",
            "rounds": 2,
        },
    )
    assert "1.75x (1.50-2.00)" in md and "3/4 (first diff at 1)" in md


def test_suffix_sim_predicts_a_served_run(load_script, tmp_path: Path, capsys) -> None:
    level = repetitive(2, 32)
    results = [
        {
            "method": m,
            "round": 0,
            "concurrency": 1,
            "tokens_per_s": tps,
            "outputs": [r.output for r in level.requests],
            "prompt_ids": [r.prompt for r in level.requests],
        }
        for m, tps in (("none", 60.0), ("suffix", 150.0))
    ]
    (tmp_path / "vllm_compare.json").write_text(
        json.dumps({"meta": {"k": 16, "depth": 32}, "results": results})
    )
    (tmp_path / "vllm_compare_costs.json").write_text(json.dumps(costs().to_json()))
    sim = load_script("suffix_sim")
    assert sim.main(["--predict-from", str(tmp_path), "--no-arctic"]) == 0
    out = capsys.readouterr().out
    assert "| suffix | 1 |" in out and "| 150.0 |" in out and "| none | 1 |" in out
    assert sim.main(["--predict-from", str(tmp_path / "nothing")]) == 2
