"""The `arctic` speculative method (behind ARCTIC_INFERENCE_VLLM_EXTRAS) on
real vLLM (CPU): greedy outputs identical to no speculation, also from a
speculator in the released checkpoint layout (ArcticTraining's
pytorch_model.bin) and under Ulysses SP=2, the right hidden states reach the
speculator, drafts get accepted, suffix drafts win when they score high,
hard_disable_by_batch_size, and bad configs (base_model_archs among them) failing
at start-up."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from arctic_inference_vllm.envs import EXTRAS_ENV as SWITCH

pytestmark = pytest.mark.vllm

PROBE = "arctic_probe.ArcticProbe"
N_PREDICT = 3
# the greedy tokens without speculation: the plain_greedy fixture (tests/vllm/conftest.py)
from greedy_reference import ARCTIC_PROMPTS as PROMPTS  # noqa: E402

TRAIN_PROMPTS = [f"{w} item {i}: " for i in range(6) for w in ("alpha", "beta", "gamma", "delta")]


def greedy(max_tokens: int = 64):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def token_ids(llm, prompts: list[str], max_tokens: int = 64) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, greedy(max_tokens))]


def counters(llm) -> dict[str, float]:
    return {
        m.name.removeprefix("vllm:spec_decode_"): m.value
        for m in llm.get_metrics()
        if m.name.startswith("vllm:spec_decode") and hasattr(m, "value")
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def close(llm) -> None:
    # Engines in one process share vLLM's metrics registry: one at a time.
    del llm
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def switch_on(extras_switch):
    """The switch for this process (the front end) and the engine processes
    it starts; it is read where the method is used, so turning it on after
    the plugin registered is enough for the method. The extras' front-end
    patches (the Ulysses flag) are installed too, in case this process
    registered with the switch off."""
    import arctic_inference_vllm
    import arctic_inference_vllm.plugin as plugin

    with extras_switch():
        arctic_inference_vllm.register()
        plugin.install_extras()
        yield


@pytest.fixture(scope="module")
def speculator(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An LSTM speculator distilled from the tiny model's own greedy outputs
    (a few seconds), so that its drafts get accepted."""
    from arctic_inference_core.speculator.train import parse_args, run

    root = tmp_path_factory.mktemp("arctic-spec")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(TRAIN_PROMPTS)
        )
    )
    run(
        parse_args(
            [
                "--base-model",
                tiny_model,
                "--prompts",
                str(prompts),
                "--out",
                str(root / "run"),
                "--method",
                "lstm",
                "--n-predict",
                str(N_PREDICT),
                "--inner-dim",
                "64",
                "--batch-size",
                "64",
                "--lr",
                "3e-3",
                "--max-new-tokens",
                "48",
                "--num-eval",
                "4",
                "--threads",
                "1",
                "--no-progress",
                "--steps",
                "150",
                "--eval-every",
                "150",
            ]
        ),
        log=lambda *_: None,
    )
    return str(root / "run" / "speculator")


@pytest.fixture(scope="module")
def released_speculator(speculator: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The distilled speculator as ArcticTraining writes a released one:
    pytorch_model.bin of its ArcticLSTMSpeculator's state dict (input_emb,
    cell_emb, output_emb the very tensor of forget_emb; the four gate
    projections apart; one tied head per position) and its config class's
    config.json (string widths), with base_model_archs as published."""
    import torch
    from safetensors.torch import load_file

    src, dst = Path(speculator), tmp_path_factory.mktemp("released")
    ours = json.loads((src / "config.json").read_text())
    t = load_file(str(src / "model.safetensors"))
    forget = t["forget_emb.0.weight"]
    sd = {f"{g}_emb.0.weight": forget for g in ("forget", "input", "cell", "output")}
    for g in ("forget", "input", "cell", "output"):
        for j in (0, 1):
            sd[f"{g}_proj.{j}.weight"] = t[f"{g}_proj.{j}.weight"]
    for name in ("cell_ln", "state_ln"):
        sd[f"{name}.0.weight"], sd[f"{name}.0.bias"] = t[f"{name}.0.weight"], t[f"{name}.0.bias"]
    for i in range(N_PREDICT):
        sd[f"head.{i}.weight"] = t["head.0.weight"]
    torch.save(sd, dst / "pytorch_model.bin")
    config = {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "base_model_name_or_path": ours["base_model_name_or_path"],
        "input_hidden_dim": ours["input_hidden_dim"],
        "inner_dim": ours["inner_dim"],
        "proj_dim": ours["proj_dim"],
        "emb_dim": ours["emb_dim"],
        "model_type": "mlp_speculator",
        "n_candidates": N_PREDICT,
        "n_predict": N_PREDICT,
        "scale_input": ours["scale_input"],
        "tie_weights": True,
        "tie_lstm_embs": True,
        "top_k_tokens_per_head": [1] * N_PREDICT,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "vocab_size": ours["vocab_size"],
        "method": "sum_lstm",
        "base_model_archs": ["LlamaForCausalLM", "LlamaSwiftKVForCausalLM"],
    }
    (dst / "config.json").write_text(json.dumps(config))
    return str(dst)


# The configuration.
RELEASED_SPEC = {
    "method": "arctic",
    "num_speculative_tokens": 3,
    "enable_suffix_decoding": True,
    "disable_by_batch_size": 64,
}


def random_speculator(path: Path, hidden: int, vocab: int) -> str:
    from arctic_inference_core.speculator import SpeculatorConfig, build_speculator, save_speculator

    save_speculator(
        build_speculator(
            SpeculatorConfig(
                method="mlp",
                n_predict=N_PREDICT,
                input_hidden_dim=hidden,
                inner_dim=32,
                vocab_size=vocab,
            )
        ),
        path,
    )
    return str(path)


@pytest.fixture(scope="module")
def runs(
    make_llm, tiny_model: str, speculator: str, released_speculator: str, plain_greedy
) -> dict:
    """All engine work of this module, one engine at a time (each start
    costs ~20 s on 2 cores); the tests below check the results. No
    speculation: the session's plain_greedy engine (the suffix tests' too)."""
    out: dict = {"plain": [plain_greedy[p] for p in PROMPTS]}

    # Speculator only: the whole batch at once, then one prompt at a time. A
    # fixed step budget (the user's setting wins over the cost-aware policy):
    # every draft is the speculator's whole draft.
    llm = make_llm(
        tiny_model,
        {"method": "arctic", "model": speculator},
        worker_extension_cls=PROBE,
        additional_config={"arctic_inference": {"suffix_step_token_budget": 512}},
    )
    llm.collective_rpc("arctic_probe_start")
    (out["state"],) = llm.collective_rpc("suffix_cache_state")
    c0 = counters(llm)
    out["spec_batched"] = token_ids(llm, PROMPTS)
    c1 = counters(llm)
    out["spec_sequential"] = [token_ids(llm, [p])[0] for p in PROMPTS]
    c2 = counters(llm)
    out["spec_batched_counts"], out["spec_sequential_counts"] = delta(c1, c0), delta(c2, c1)
    (out["spec_probe"],) = llm.collective_rpc("arctic_probe_stats")
    close(llm)

    # With suffix decoding (drafts up to 8 tokens; the speculator drafts 3),
    # and no drafts at 3 or more running requests (Arctic Inference's hard
    # cap); the cost-aware policy chooses.
    llm = make_llm(
        tiny_model,
        {
            "method": "arctic",
            "model": speculator,
            "num_speculative_tokens": 8,
            "enable_suffix_decoding": True,
            "hard_disable_by_batch_size": 3,
        },
        worker_extension_cls=PROBE,
    )
    llm.collective_rpc("arctic_probe_start")
    c0 = counters(llm)
    out["suffix"] = (
        token_ids(llm, PROMPTS[:2]) + token_ids(llm, PROMPTS[2:4]) + token_ids(llm, PROMPTS[4:])
    )
    c1 = counters(llm)
    out["suffix_counts"] = delta(c1, c0)
    (out["suffix_probe"],) = llm.collective_rpc("arctic_probe_stats")
    (out["suffix_state"],) = llm.collective_rpc("suffix_cache_state")
    (out["policy"],) = llm.collective_rpc("draft_policy_state")
    three = ["gamma item 1: ", "delta item 2: ", "alpha item 3: "]
    out["three_concurrent"] = token_ids(llm, three, 128)
    c2 = counters(llm)
    out["one_at_a_time"] = [token_ids(llm, [p], 128)[0] for p in three]
    c3 = counters(llm)
    out["three_counts"], out["one_counts"] = delta(c2, c1), delta(c3, c2)
    close(llm)

    # The released layout (ArcticTraining's pytorch_model.bin), the settings.
    llm = make_llm(
        tiny_model, {**RELEASED_SPEC, "model": released_speculator}, worker_extension_cls=PROBE
    )
    llm.collective_rpc("arctic_probe_start")
    c0 = counters(llm)
    out["released"] = token_ids(llm, PROMPTS)
    out["released_counts"] = delta(counters(llm), c0)
    (out["released_probe"],) = llm.collective_rpc("arctic_probe_stats")
    close(llm)
    return out


def test_speculator_outputs_identical_to_no_speculation(runs) -> None:
    assert runs["state"]["proposer"] == "ArcticProposer"
    assert runs["spec_batched"] == runs["plain"]
    assert runs["spec_sequential"] == runs["plain"]


def test_speculator_drafts_get_accepted(runs) -> None:
    c = runs["spec_batched_counts"]
    assert c["num_drafts"] > 0
    assert c["num_draft_tokens"] == N_PREDICT * c["num_drafts"]  # the speculator drafts n_predict
    assert c["num_accepted_tokens"] > 0.2 * c["num_draft_tokens"], c


def test_speculator_reads_each_requests_last_hidden_state(runs) -> None:
    probe = runs["spec_probe"]
    assert probe["rows"] > 100 and probe["mismatches"] == 0, probe
    # Drafts depend only on each request's own state: batching changes nothing.
    assert runs["spec_batched_counts"] == runs["spec_sequential_counts"]


def test_with_suffix_outputs_identical_to_no_speculation(runs) -> None:
    assert runs["suffix_state"]["proposer"] == "ArcticProposer"
    assert runs["suffix_state"]["cached"] >= len(PROMPTS)  # finished requests reach the cache
    assert runs["suffix"] == runs["plain"]
    assert runs["suffix_probe"]["mismatches"] == 0, runs["suffix_probe"]


def test_released_layout_outputs_identical_to_no_speculation(runs) -> None:
    """A speculator as ArcticTraining releases it, with the issue's
    speculative_config: same greedy tokens as no speculation, and its drafts
    (read from the right hidden states) get accepted."""
    assert runs["released"] == runs["plain"]
    probe, c = runs["released_probe"], runs["released_counts"]
    # (how often the speculator drafts depends on the cost-aware draft policy)
    assert probe["rows"] > 0 and probe["mismatches"] == 0, probe
    assert c["num_accepted_tokens"] > 0, c


def test_suffix_drafts_win_when_they_score_high(runs) -> None:
    c = runs["suffix_counts"]
    assert c["num_accepted_tokens"] > 0
    # Speculator drafts have exactly 3 tokens and suffix drafts only win with
    # score >= 3 (so >= 3 tokens): more than 3 per draft means long suffix drafts.
    assert c["num_draft_tokens"] > N_PREDICT * c["num_drafts"], c
    # ... and the speculator still drafted for others.
    assert runs["suffix_probe"]["rows"] > 0


def test_the_draft_policy_learns_step_costs(runs) -> None:
    policy = runs["policy"]
    assert policy["observed_steps"] > 20, policy
    eager = policy["cost"]["shapes"]["eager"]  # CPU: no CUDA graphs
    assert eager["tokens"] and all(ms > 0 for ms in eager["ms"])
    assert policy["kinds"].get("drafts", 0) > 0


def test_hard_disable_by_batch_size(runs) -> None:
    assert runs["three_concurrent"] == runs["one_at_a_time"]
    three, one = runs["three_counts"], runs["one_counts"]
    # 3 running >= 3: no drafts, except in the first steps, which may run
    # before the engine core has received all three requests.
    assert one["num_drafts"] > 20 and three["num_drafts"] < 0.25 * one["num_drafts"], (three, one)


# ------------------------------------------------------------ bad configs


@pytest.fixture
def start_fails(tiny_model: str, make_llm):
    """The engine must not start: the front end's config build raises."""

    def check(spec: dict) -> str:
        with pytest.raises(ValueError) as e:
            make_llm(tiny_model, spec)
        return str(e.value)

    return check


def test_switch_off_is_refused(start_fails, tiny_model: str, speculator: str, monkeypatch) -> None:
    monkeypatch.setenv(SWITCH, "0")
    msg = start_fails({"method": "arctic", "model": speculator})
    assert SWITCH in msg and "arctic" in msg


def test_switch_off_in_a_fresh_process_names_the_switch(tiny_model: str, speculator: str) -> None:
    """A fresh process with the switch off (the plugin registered through
    vLLM's entry point): the method is refused at config build, naming the
    switch; a non-arctic config passes the front-end hook untouched."""
    script = textwrap.dedent(f"""
        import os
        os.environ.pop({SWITCH!r}, None)
        from vllm.engine.arg_utils import EngineArgs
        args = EngineArgs(model={tiny_model!r}, speculative_config={{
            "method": "arctic", "model": {speculator!r}, "enable_suffix_decoding": True}})
        try:
            args.create_engine_config()
        except Exception as e:
            print("REFUSED", type(e).__name__, str(e).replace(chr(10), " "))
        plain = EngineArgs(model={tiny_model!r}, speculative_config={{
            "method": "suffix", "num_speculative_tokens": 4}}).create_engine_config()
        print("PLAIN", plain.speculative_config.method, plain.speculative_config.num_speculative_tokens)
    """)
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("REFUSED")), "")
    assert SWITCH in line and "arctic" in line, out.stdout[-2000:] + out.stderr[-2000:]
    assert "PLAIN suffix 4" in out.stdout


def test_missing_speculator_directory(start_fails, tiny_model: str, tmp_path: Path) -> None:
    msg = start_fails({"method": "arctic", "model": str(tmp_path / "nope")})
    assert "method 'arctic'" in msg and "neither a local directory" in msg


def test_hidden_size_mismatch(start_fails, tiny_model: str, tmp_path: Path) -> None:
    spec = random_speculator(tmp_path / "h64", hidden=64, vocab=259)
    msg = start_fails({"method": "arctic", "model": spec})
    assert "hidden size mismatch" in msg and "input_hidden_dim=64" in msg and "128" in msg


def test_vocab_size_mismatch(start_fails, tiny_model: str, tmp_path: Path) -> None:
    spec = random_speculator(tmp_path / "v300", hidden=128, vocab=300)
    msg = start_fails({"method": "arctic", "model": spec})
    assert "vocab size mismatch" in msg and "300" in msg and "259" in msg


def test_more_tokens_than_heads_without_suffix(
    start_fails, tiny_model: str, speculator: str
) -> None:
    msg = start_fails(
        {"method": "arctic", "model": speculator, "num_speculative_tokens": N_PREDICT + 2}
    )
    assert f"exceeds the speculator's n_predict={N_PREDICT}" in msg


def test_arctic_keys_with_another_method(start_fails, tiny_model: str) -> None:
    msg = start_fails({"method": "ngram", "num_speculative_tokens": 2, "disable_by_batch_size": 4})
    assert "belong to method 'arctic'" in msg


# ------------------------------------------------------------ base_model_archs


def _with_archs(src: str, dst: Path, archs: list[str]) -> str:
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["base_model_archs"] = archs
    (dst / "config.json").write_text(json.dumps(cfg))
    return str(dst)


def test_base_model_archs_mismatch_is_refused(
    start_fails, tiny_model: str, released_speculator: str, tmp_path: Path
) -> None:
    spec = _with_archs(released_speculator, tmp_path / "qwen", ["Qwen2ForCausalLM"])
    msg = start_fails({**RELEASED_SPEC, "model": spec})
    assert "trained for base model architecture(s) ['Qwen2ForCausalLM']" in msg
    assert "the served model is LlamaForCausalLM" in msg
    assert '"skip_base_model_archs_check": true' in msg


def test_base_model_archs_override(
    tiny_model: str, released_speculator: str, tmp_path: Path
) -> None:
    """The override: the engine config builds (no engine started), and vLLM's
    own config never sees the key."""
    from vllm.engine.arg_utils import EngineArgs

    spec = _with_archs(released_speculator, tmp_path / "qwen", ["Qwen2ForCausalLM"])
    args = EngineArgs(
        model=tiny_model,
        speculative_config={**RELEASED_SPEC, "model": spec, "skip_base_model_archs_check": True},
    )
    config = args.create_engine_config()
    assert config.speculative_config.method == "custom_class"
    assert config.additional_config["arctic_speculator"]["model"] == spec


def test_saved_configs_read_as_arctic_inference_reads_them(tmp_path: Path) -> None:
    """Arctic Inference reads a speculator's config.json through vLLM's
    MLPSpeculatorConfig (which asserts one top_k_tokens_per_head entry per
    head) and then sets its hidden_size (an alias of emb_dim) to
    int(hidden_size): what save_speculator writes passes both, for every
    layout, with n_predict other than vLLM's default 3."""
    from vllm.transformers_utils.configs.mlp_speculator import MLPSpeculatorConfig

    from arctic_inference_core.speculator import SpeculatorConfig, build_speculator, save_speculator

    for name, kw in {
        "lstm": dict(method="sum_lstm", tie_weights=True),
        "mlp": dict(method="mlp", tie_weights=True),
        "rnn": dict(method="mlp", proj_dims=(16, 16)),
    }.items():
        cfg = SpeculatorConfig(n_predict=5, input_hidden_dim=24, inner_dim=16, vocab_size=50, **kw)
        save_speculator(build_speculator(cfg), tmp_path / name)
        d = json.loads((tmp_path / name / "config.json").read_text())
        hf = MLPSpeculatorConfig(**d)
        hf.hidden_size = int(hf.hidden_size)
        assert hf.n_predict == 5 and hf.architectures == d["architectures"]
        assert hf.architectures[0] in (
            "ArcticMLPSpeculatorPreTrainedModel",
            "ArcticLSTMSpeculatorPreTrainedModel",
        )


# ------------------------------------------------------------ Ulysses SP


def _sp_run(model: str, spec: dict | None, sp: int) -> dict:
    """Greedy tokens of PROMPTS with prefills split over several 32-token
    steps; what the ranks' speculators read; the engine's layout."""
    from cpu_engine import cpu_llm

    kwargs = {"ulysses_sequence_parallel_size": sp} if sp > 1 else {}
    llm = cpu_llm(
        model,
        sp,
        max_num_batched_tokens=32,
        max_num_seqs=4,
        speculative_config=spec,
        worker_extension_cls=PROBE,
        disable_log_stats=False,
        **kwargs,
    )
    try:
        parallel = llm.llm_engine.vllm_config.parallel_config
        if spec is not None:
            llm.collective_rpc("arctic_probe_start")
        c0 = counters(llm)
        out = {
            "tokens": token_ids(llm, PROMPTS, 48),
            "world": parallel.world_size,
            "worker": parallel.worker_cls,
        }
        out["counts"] = delta(counters(llm), c0)
        if spec is not None:
            out["probes"] = llm.collective_rpc("arctic_probe_stats")
        return out
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        close(llm)


def test_arctic_under_ulysses_sp2_matches_sp1(tiny_model: str, released_speculator: str) -> None:
    """The arctic method (speculator + suffix decoding) with SP=2: the ranks
    draft from the all-gathered hidden states (the right rows on every rank;
    vLLM takes rank 0's drafts, and each rank's cost-aware draft policy times
    its own steps, so the ranks need not draft equally often), drafts get
    accepted, and the greedy tokens equal SP=1's without speculation. (The
    same speculative_config on one rank keeps them too:
    test_released_layout_outputs_identical_to_no_speculation.)"""
    spec = {**RELEASED_SPEC, "model": released_speculator}
    plain = _sp_run(tiny_model, None, sp=1)
    sp2 = _sp_run(tiny_model, spec, sp=2)
    assert (sp2["world"], sp2["worker"]) == (
        2,
        "arctic_inference_vllm.ulysses.workers.UlyssesCPUWorker",
    )
    assert plain["world"] == 1
    assert sp2["tokens"] == plain["tokens"]
    assert sp2["counts"]["num_accepted_tokens"] > 0, sp2["counts"]
    assert len(sp2["probes"]) == 2 and sp2["probes"][0]["rows"] > 0, sp2["probes"]
    assert all(p["mismatches"] == 0 for p in sp2["probes"]), sp2["probes"]
