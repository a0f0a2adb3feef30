"""Unit tests of the vLLM adapter's pure-Python parts (no vLLM needed)."""

from __future__ import annotations

import numpy as np
import pytest

from arctic_inference_vllm import envs, versions


def test_pad_drafts_extends_consistently_or_repeats() -> None:
    from types import SimpleNamespace

    from arctic_inference_vllm.suffix.graph_padding import pad_drafts

    longer = {"a": [1, 2, 3, 4, 5, 6], "b": [9, 9], "c": [7, 8]}

    def extend(r):
        ids = longer.get(r, [])
        return SimpleNamespace(token_ids=ids, probs=[0.5] * len(ids))

    drafts = [[1, 2], [3], [], [4, 5, 6, 7, 8]]
    probs = [np.array([1.0, 0.9]), np.array([0.8]), np.zeros(0), np.full(5, 0.7)]
    out, out_probs = pad_drafts(["a", "b", "c", "d"], drafts, probs, [0, 3, 2, 1], 4, extend)
    # a: the tree's longer path; b: it disagrees, so repeat; c: empty draft takes
    # the longer path; d: already long, cut to k
    assert out == [[1, 2, 3, 4], [3, 3, 3, 3], [7, 8, 8, 8], [4, 5, 6, 7]]
    # each token's probability: the draft's own, the longer path's, 0 for repeats
    assert [p.tolist() for p in out_probs] == [
        [1.0, 0.9, 0.5, 0.5],
        [0.8, 0, 0, 0],
        [0.5, 0.5, 0, 0],
        [0.7] * 4,
    ]
    assert pad_drafts(["x"], [[]], [np.zeros(0)], [5], 2, extend)[0] == [[5, 5]]


def test_version_gate() -> None:
    assert versions.is_supported("0.26.0") and versions.is_supported("0.32.0")
    assert versions.is_supported("0.33.1+cu130")
    assert not versions.is_supported("0.25.2") and not versions.is_supported("0.34.0")
    assert not versions.is_supported("1.0.0")
    with pytest.raises(ValueError):
        versions.parse("dev")


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("1", True), ("true", True)])
def test_extras_switch(monkeypatch, value, on) -> None:
    monkeypatch.setenv(envs.EXTRAS_ENV, value)
    assert envs.extras_enabled() is on


def test_extras_switch_rejects_garbage(monkeypatch) -> None:
    monkeypatch.setenv(envs.EXTRAS_ENV, "maybe")
    with pytest.raises(ValueError, match=envs.EXTRAS_ENV):
        envs.extras_enabled()


@pytest.mark.parametrize(
    "extras, legacy, installed, on",
    [
        (None, "1", False, True),  # Arctic Inference's command lines, unchanged
        (None, "0", False, False),
        ("0", "1", False, False),  # our switch, when set, wins
        ("1", "0", False, True),
        (None, "1", True, False),  # arctic-inference installed: its switch is its own
        (None, None, False, False),
    ],
)
def test_arctic_inferences_switch_is_an_alias(monkeypatch, extras, legacy, installed, on) -> None:
    for name, value in ((envs.EXTRAS_ENV, extras), (envs.LEGACY_ENV, legacy)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(envs, "arctic_inference_installed", lambda: installed)
    assert envs.extras_enabled() is on
    monkeypatch.setenv(envs.LEGACY_ENV, "perhaps")
    if extras is None and not installed:
        with pytest.raises(ValueError, match=envs.LEGACY_ENV):
            envs.extras_enabled()


# ------------------------------------------------ the arctic method (config, drafts)


def test_last_sampled_rows() -> None:
    from arctic_inference_vllm.speculator.proposer import last_sampled_rows

    assert last_sampled_rows([1, 0, 1], None) == [0, 1, 2]  # no drafts verified: one row each
    # rows per request: drafts + 1; the last sampled token's row inside it
    assert last_sampled_rows([3, 1, 2, 0], [2, 0, 3, 1]) == [2, 3, 5, 8]
    with pytest.raises(RuntimeError, match="step layout"):
        last_sampled_rows([1, 1], [0])


def test_suffix_drafts_win_at_the_speculator_length() -> None:
    from arctic_inference_vllm.speculator.drafting import choose_drafts

    drafts, need = choose_drafts([[1, 2, 3, 4], [5, 6, 7], [8], []], [3.0, 2.9, 1.0, 0.0], 3)
    assert drafts == [[1, 2, 3, 4], [], [], []]
    assert need == [False, True, True, True]


@pytest.fixture()
def spec_dir(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from arctic_inference_core.speculator import SpeculatorConfig, build_speculator, save_speculator

    monkeypatch.setenv(envs.EXTRAS_ENV, "1")
    save_speculator(
        build_speculator(
            SpeculatorConfig(
                method="mlp", n_predict=3, input_hidden_dim=16, inner_dim=8, vocab_size=50
            )
        ),
        tmp_path / "s",
    )
    return str(tmp_path / "s")


def test_arctic_translates_to_custom_class(spec_dir) -> None:
    from arctic_inference_vllm.speculator import config as am

    spec = {
        "method": "arctic",
        "model": spec_dir,
        "enable_suffix_decoding": True,
        "disable_by_batch_size": 8,
        "num_speculative_tokens": 16,
        "suffix_decoding_max_tree_depth": 32,
    }
    rewritten, settings = am.translate(spec, hidden_size=16, vocab_size=50)
    assert rewritten == {
        "method": "custom_class",
        "model": am.PROPOSER_CLASS,
        "num_speculative_tokens": 16,
        "suffix_decoding_max_tree_depth": 32,
    }
    assert settings == am.ArcticSettings(
        model=spec_dir,
        n_predict=3,
        num_speculative_tokens=16,
        enable_suffix_decoding=True,
        disable_by_batch_size=8,
    )
    assert settings.speculator_tokens == 3
    extra = {am.SETTINGS_KEY: settings.to_dict()}
    assert am.ArcticSettings.from_additional_config(extra) == settings
    # defaults: n_predict tokens, no suffix, Arctic Inference's soft cap of 64
    _, plain = am.translate({"method": "arctic", "model": spec_dir}, 16, 50)
    assert (
        plain.num_speculative_tokens,
        plain.enable_suffix_decoding,
        plain.disable_by_batch_size,
        plain.hard_disable_by_batch_size,
    ) == (3, False, 64, None)
    _, hard = am.translate(
        {"method": "arctic", "model": spec_dir, "hard_disable_by_batch_size": 32}, 16, 50
    )
    assert hard.hard_disable_by_batch_size == 32
    assert "hard_disable_by_batch_size" not in am.translate(dict(spec), 16, 50)[0]


def test_arctic_draft_limit_follows_arctic_inference() -> None:
    from arctic_inference_vllm.speculator.config import ArcticSettings

    s = ArcticSettings("m", 3, 3, False, disable_by_batch_size=8, hard_disable_by_batch_size=16)
    # up to 8 running: all draft; above, the first 8; at 16 or more, none
    assert [s.draft_limit(b) for b in (1, 8, 9, 15, 16, 40)] == [1, 8, 8, 8, 0, 0]
    soft = ArcticSettings("m", 3, 3, False, disable_by_batch_size=None)
    assert soft.draft_limit(500) == 500


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": "/no/such/dir"}, "neither a local directory"),
        ({"model": None}, "a speculator directory or a Hugging Face Hub repository id"),
        ({"num_speculative_tokens": 4}, "exceeds the speculator's n_predict=3"),
        ({"num_speculative_tokens": 0}, "num_speculative_tokens must be an integer >= 1"),
        ({"enable_suffix_decoding": "yes"}, "enable_suffix_decoding must be true or false"),
        ({"disable_by_batch_size": 0}, "disable_by_batch_size must be an integer >= 1"),
        ({"hard_disable_by_batch_size": 0}, "hard_disable_by_batch_size must be an integer >= 1"),
        ({"enable_suffix_decoding": True, "suffix_decoding_min_token_prob": 2.0}, r"in \[0, 1\]"),
        ({"enable_suffix_decoding": True, "suffix_decoding_max_tree_depth": 0}, "max_tree_depth"),
    ],
)
def test_arctic_bad_settings(spec_dir, change, message) -> None:
    from arctic_inference_vllm.speculator import config as am

    with pytest.raises(am.ArcticConfigError, match=message) as e:
        am.translate({"method": "arctic", "model": spec_dir, **change}, 16, 50)
    assert str(e.value).startswith("speculative_config method 'arctic': ")


def test_arctic_speculator_from_the_hub_cache(spec_dir, tmp_path, monkeypatch) -> None:
    """A repository id, as Arctic Inference's docs name the released
    speculators, resolves through the Hugging Face cache (offline here: the
    cache is built by hand, as a download would leave it)."""
    import shutil

    from huggingface_hub import constants

    from arctic_inference_vllm.speculator import config as am

    cache = tmp_path / "hub"
    repo = cache / "models--Snowflake--Tiny-Speculator"
    snap = repo / "snapshots" / ("a" * 40)
    shutil.copytree(spec_dir, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    spec = {"method": "arctic", "model": "Snowflake/Tiny-Speculator"}
    _, settings = am.translate(spec, 16, 50)
    assert settings.model == str(snap) and settings.n_predict == 3
    with pytest.raises(am.ArcticConfigError, match="fetching it from the Hugging Face Hub failed"):
        am.translate({**spec, "model": "Snowflake/Not-There"}, 16, 50)


def test_arctic_checks_the_base_model_and_the_switch(spec_dir, monkeypatch) -> None:
    from arctic_inference_vllm.speculator import config as am

    with pytest.raises(ValueError, match="hidden size mismatch"):
        am.translate({"method": "arctic", "model": spec_dir}, 32, 50)
    with pytest.raises(ValueError, match="vocab size mismatch"):
        am.translate({"method": "arctic", "model": spec_dir}, 16, 51)
    monkeypatch.setenv(envs.EXTRAS_ENV, "0")
    with pytest.raises(ValueError, match=envs.EXTRAS_ENV):
        am.translate({"method": "arctic", "model": spec_dir}, 16, 50)
    with pytest.raises(ValueError, match="not method 'custom_class' directly"):
        am.ArcticSettings.from_additional_config({})  # the proposer class used on its own


def _with_archs(spec_dir: str, archs) -> str:
    import json
    from pathlib import Path

    cfg_path = Path(spec_dir) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if archs is None:
        cfg.pop("base_model_archs", None)
    else:
        cfg["base_model_archs"] = archs
    cfg_path.write_text(json.dumps(cfg))
    return spec_dir


def test_arctic_checks_base_model_archs(spec_dir) -> None:
    """The speculator's base_model_archs must name the served model's
    architecture; "skip_base_model_archs_check": true overrides it."""
    from arctic_inference_vllm.speculator import config as am

    spec = {"method": "arctic", "model": _with_archs(spec_dir, ["LlamaForCausalLM", "X"])}
    am.translate(spec, 16, 50, ["LlamaForCausalLM"])
    with pytest.raises(am.ArcticConfigError) as e:
        am.translate(spec, 16, 50, ["Qwen2ForCausalLM"])
    msg = str(e.value)
    assert "trained for base model architecture(s) ['LlamaForCausalLM', 'X']" in msg
    assert "the served model is Qwen2ForCausalLM" in msg
    assert '"skip_base_model_archs_check": true' in msg
    rewritten, _ = am.translate({**spec, am.SKIP_ARCHS_KEY: True}, 16, 50, ["Qwen2ForCausalLM"])
    assert am.SKIP_ARCHS_KEY not in rewritten  # vLLM never sees the key
    with pytest.raises(am.ArcticConfigError, match="skip_base_model_archs_check must be true"):
        am.translate({**spec, am.SKIP_ARCHS_KEY: "yes"}, 16, 50, ["LlamaForCausalLM"])
    # hidden/vocab sizes are checked even with the override
    with pytest.raises(am.ArcticConfigError, match="hidden size mismatch"):
        am.translate({**spec, am.SKIP_ARCHS_KEY: True}, 32, 50, ["LlamaForCausalLM"])
    # a single string is a list of one
    am.translate(
        {**spec, "model": _with_archs(spec_dir, "Qwen2ForCausalLM")}, 16, 50, ["Qwen2ForCausalLM"]
    )
    # the key belongs to the arctic method
    with pytest.raises(ValueError, match="belong to method 'arctic'"):
        am.wants_arctic({"method": "ngram", am.SKIP_ARCHS_KEY: True})


def test_arctic_without_base_model_archs_warns(spec_dir, caplog) -> None:
    """No base_model_archs (ArcticTraining's config class does not write it):
    nothing to check, a warning says so (Arctic Inference 0.3.0 skips the
    check too)."""
    from arctic_inference_vllm.speculator import config as am

    spec = {"method": "arctic", "model": _with_archs(spec_dir, None)}
    with caplog.at_level("WARNING", logger="vllm.arctic_inference"):
        am.translate(spec, 16, 50, ["Qwen2ForCausalLM"])
    assert "has no base_model_archs" in caplog.text


def test_arctic_needs_the_weights(spec_dir, tmp_path) -> None:
    from arctic_inference_vllm.speculator import config as am

    (tmp_path / "s" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no weights"):
        am.translate({"method": "arctic", "model": spec_dir}, 16, 50)
