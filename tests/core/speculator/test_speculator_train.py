"""Training pipeline of the speculator (CPU, tiny random Llama)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from arctic_inference_core.speculator import load_speculator  # noqa: E402
from arctic_inference_core.speculator.train import (  # noqa: E402
    TrainingError,
    load_prompts,
    main,
    parse_args,
    run,
)

# similar prompts -> the random model's (looping) greedy continuations recur,
# so held-out prompts are in distribution and the heads can learn them
_PROMPTS = [f"{w} item {i}: " for i in range(6) for w in ("alpha", "beta", "gamma", "delta")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from arctic_inference_vllm.testing import build_tiny_llama

    root = tmp_path_factory.mktemp("spec_train")
    model = build_tiny_llama(root / "tiny")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(_PROMPTS))
    )
    return {"root": root, "model": model, "prompts": prompts}


def _args(tiny, out, *extra):
    return parse_args(
        [
            "--base-model",
            str(tiny["model"]),
            "--prompts",
            str(tiny["prompts"]),
            "--out",
            str(out),
            "--method",
            "lstm",
            "--n-predict",
            "3",
            "--inner-dim",
            "64",
            "--batch-size",
            "64",
            "--lr",
            "3e-3",
            "--max-new-tokens",
            "24",
            "--num-eval",
            "4",
            "--threads",
            "1",
            "--no-progress",
            *extra,
        ]
    )


def test_training_improves_acceptance(tiny):
    out = tiny["root"] / "run"
    doc = run(_args(tiny, out, "--steps", "150", "--eval-every", "75"), log=lambda *_: None)
    hist = doc["history"]
    assert [h["step"] for h in hist] == [0, 75, 150]
    before, after = hist[0], hist[-1]
    assert len(after["acceptance"]) == 3
    # acceptance is monotone in j (prefix acceptance)
    assert after["acceptance"][0] >= after["acceptance"][1] >= after["acceptance"][2]
    assert before["mean_accepted_length"] < 0.2
    assert after["mean_accepted_length"] > 0.5
    assert after["mean_accepted_length"] > before["mean_accepted_length"] + 0.4
    ev = json.loads((out / "eval.json").read_text())
    assert ev["final"]["step"] == 150 and ev["eval_prompts"] == 4 and ev["train_prompts"] == 20
    assert (out / "data_cache.pt").is_file()
    # the saved speculator loads with the checkpoint loader and fits the base model
    spec = load_speculator(out / "speculator")
    assert spec.config.method == "sum_lstm" and spec.n_predict == 3
    spec.check_compatible(128, 259)
    # written in the released layout, with the base model's architectures
    saved = json.loads((out / "speculator" / "config.json").read_text())
    assert saved["architectures"] == ["ArcticLSTMSpeculatorPreTrainedModel"]
    assert saved["base_model_archs"] == ["LlamaForCausalLM"]


def test_resume(tiny):
    out = tiny["root"] / "resume"
    first = run(_args(tiny, out, "--steps", "40", "--eval-every", "20"), log=lambda *_: None)
    assert first["step"] == 40
    logs: list[str] = []
    second = run(
        _args(tiny, out, "--steps", "70", "--eval-every", "20", "--resume"),
        log=lambda *m: logs.append(" ".join(map(str, m))),
    )
    assert second["step"] == 70
    assert any("resuming from" in m and "step 40" in m for m in logs)
    assert any("using cached distillation data" in m for m in logs)  # no regeneration
    steps = [h["step"] for h in second["history"]]
    assert steps == [0, 20, 40, 60, 70]
    assert len(second["final"]["acceptance"]) == len(first["final"]["acceptance"]) == 3
    state = torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 70


def test_mlp_method_runs(tiny):
    out = tiny["root"] / "mlp"
    doc = run(
        _args(tiny, out, "--method", "mlp", "--steps", "5", "--eval-every", "5"),
        log=lambda *_: None,
    )
    assert doc["step"] == 5
    assert load_speculator(out / "speculator").config.method == "mlp"


def test_bad_inputs(tiny, tmp_path, capsys):
    with pytest.raises(TrainingError, match="base-model.*not a directory"):
        run(
            parse_args(
                [
                    "--base-model",
                    str(tmp_path / "nope"),
                    "--prompts",
                    str(tiny["prompts"]),
                    "--out",
                    str(tmp_path / "o"),
                ]
            )
        )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TrainingError, match="no prompts"):
        run(
            parse_args(
                [
                    "--base-model",
                    str(tiny["model"]),
                    "--prompts",
                    str(empty),
                    "--out",
                    str(tmp_path / "o"),
                ]
            )
        )
    with pytest.raises(TrainingError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(TrainingError, match=r"bad.jsonl:2"):
        load_prompts(str(bad))
    # the CLI turns the error into a message and exit status 2
    rc = main(
        [
            "--base-model",
            str(tmp_path / "nope"),
            "--prompts",
            str(empty),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "error: --base-model" in capsys.readouterr().err


def test_agentic_trace_format_and_response(tiny, tmp_path):
    p = tmp_path / "traces.jsonl"
    rows = [
        {
            "id": f"r{i}",
            "family": "edit_diff",
            "prompt": f"fix bug {i}\n",
            "response": "ok done " * 4,
        }
        for i in range(3)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = load_prompts(str(p), use_response=True)
    assert [r["id"] for r in recs] == ["r0", "r1", "r2"] and recs[0]["response"].startswith("ok")
    assert {r["family"] for r in recs} == {"edit_diff"}
    doc = run(
        parse_args(
            [
                "--base-model",
                str(tiny["model"]),
                "--prompts",
                str(p),
                "--out",
                str(tmp_path / "o"),
                "--use-response",
                "--inner-dim",
                "32",
                "--steps",
                "3",
                "--eval-every",
                "3",
                "--num-eval",
                "1",
                "--max-new-tokens",
                "16",
                "--threads",
                "1",
                "--no-progress",
            ]
        ),
        log=lambda *_: None,
    )
    assert doc["step"] == 3 and doc["eval_prompts"] == 1


def test_batched_generation_matches_one_prompt_at_a_time(tiny):
    from arctic_inference_core.speculator.train import _generate, _load_base, _tokenize

    tok, model = _load_base(str(tiny["model"]), torch.float32, "cpu")
    # prompts of different lengths, so batches need left padding
    prompt_ids = [_tokenize(tok, p * (1 + i % 3)) for i, p in enumerate(_PROMPTS[:7])]
    one = _generate(
        model,
        prompt_ids,
        _args(tiny, tiny["root"] / "g1", "--gen-batch-size", "1"),
        tok.pad_token_id,
        tok.eos_token_id,
    )
    many = _generate(
        model,
        prompt_ids,
        _args(tiny, tiny["root"] / "g4", "--gen-batch-size", "4"),
        tok.pad_token_id,
        tok.eos_token_id,
    )
    assert len({len(p) for p in prompt_ids}) > 1
    assert all(len(c) > 0 for c in one)
    assert many == one
