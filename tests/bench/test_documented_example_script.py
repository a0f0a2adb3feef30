"""bench/documented_example.py without engines: its speculator is one the
adapter accepts for the model, its table counts identical outputs, and bad
flags are refused. (Its engine runs were checked by hand: bench/RESULTS.md,
"Arctic Inference's documented example"; a CI run would cost two engine
starts and a conversion.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_speculator_fits_the_model(load_script, tiny_model: str, tmp_path: Path, monkeypatch):
    pytest.importorskip("torch")
    from arctic_inference_vllm import envs
    from arctic_inference_vllm.speculator import config as am

    mod = load_script("documented_example")
    spec = mod.write_speculator(Path(tiny_model), tmp_path / "spec")
    cfg = json.loads((Path(tiny_model) / "config.json").read_text())
    monkeypatch.setenv(envs.EXTRAS_ENV, "1")
    _, settings = am.translate(
        mod.example_spec(str(spec)), cfg["hidden_size"], cfg["vocab_size"], cfg["architectures"]
    )
    assert settings.n_predict == mod.N_PREDICT and settings.enable_suffix_decoding
    assert settings.disable_by_batch_size == 64
    with pytest.raises(ValueError, match="base_model_archs"):  # written for this model only
        am.translate(mod.example_spec(str(spec)), cfg["hidden_size"], cfg["vocab_size"], ["X"])


def test_table_counts_identical_outputs(load_script) -> None:
    mod = load_script("documented_example")
    rows = [
        {"label": "ref", "tokens_per_s": 10.0, "drafts": 0, "accepted": 0, "outputs": [[1, 2]] * 2},
        {
            "label": "ex",
            "tokens_per_s": 20.0,
            "drafts": 3,
            "accepted": 2,
            "outputs": [[1, 2], [1, 3]],
        },
    ]
    meta = {"model": "m", "speculator": "s", "quantization": "none", "num_prompts": 2}
    md = mod.render(rows, {**meta, "max_tokens": 2})
    assert "| ex | 20.0 | 3 | 2 | 1/2 (first diff at [1]) |" in md
    assert "| ref | 10.0 | 0 | 0 | 2/2 |" in md


def test_shift_needs_sp(load_script) -> None:
    mod = load_script("documented_example")
    with pytest.raises(SystemExit):
        mod.main(["--shift"])
