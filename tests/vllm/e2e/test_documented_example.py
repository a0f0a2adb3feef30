"""Arctic Inference's documented serving example, as written, on CPU vLLM:

    vllm serve SWIFTKV_DIR --tensor-parallel-size 1 --ulysses-sequence-parallel-size 2 \\
        --enable-shift-parallel --speculative-config '{"method": "arctic", "model": SPEC_DIR,
        "num_speculative_tokens": 3, "enable_suffix_decoding": true, "disable_by_batch_size": 64}'

and its Python form (``vllm.plugins.load_general_plugins(); LLM(model=...,
tensor_parallel_size=1, ulysses_sequence_parallel_size=2,
enable_shift_parallel=True, speculative_config={...})`` in a fresh process),
with ``ARCTIC_INFERENCE_VLLM_EXTRAS=1`` (the switch of the `arctic` method,
the SwiftKV architecture and the Ulysses/shift flags) for the Python form and
Arctic Inference's own ``ARCTIC_INFERENCE_ENABLED=1`` (its alias) for the CLI and local directories in place of
the hub names: a tiny SwiftKV checkpoint in the released layout
(tests/core/swiftkv/swiftkv_reference.py) and a random LSTM speculator as
ArcticTraining releases one (``pytorch_model.bin``,
``ArcticLSTMSpeculatorPreTrainedModel``, ``sum_lstm``, split gate
projections, ``input/cell/output_emb`` the very tensor of ``forget_emb``, one
tied head per position).

Left out of the example: ``--quantization fp8`` (no CPU kernel; fp8 is a GPU
matter, docs/swiftkv.md). Added for the CPU test machine only: float32 (vLLM
would downcast), a small KV cache, a model length for the long prompt, a
smaller step budget (a shorter start-up profile run), one core per rank, and
a worker extension that records what the ranks ran.

Greedy tokens of both forms equal the same model's without speculation on
one rank, as the plain-PyTorch reading of the released layout (float64)
predicts them: the oracle that tests/vllm/e2e/test_swiftkv_model.py holds
vLLM's SwiftKV model to. (A reference engine would cost another start; the
oracle checks a continuation in one forward pass per prompt.) Both forms also
show that the long prompt's step took the SP path and decode steps the TP
path on both ranks alike, that the speculator read the rows that produced
each request's last token (the argmax of their logits), and that drafts got
accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from arctic_inference_vllm.diagnostics import ShiftInspector
from arctic_inference_vllm.envs import EXTRAS_ENV as SWITCH
from arctic_inference_vllm.envs import LEGACY_ENV
from arctic_inference_vllm.testing import TEST_KV_CACHE_BYTES

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.vllm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "core" / "swiftkv"))
from arctic_probe import ArcticProbe  # noqa: E402
from swiftkv_reference import TINY, reference_logits, write_checkpoint  # noqa: E402

# The first prompt alone is above the default shift threshold (512 scheduled
# tokens): its prefill takes the SP path; decode steps take the TP path.
PROMPTS = [
    "def add(a, b):\n    return a + b\n" * 18,
    "abcabcabcabc",
    "The quick brown fox",
]
NEW_TOKENS = 16
MAX_MODEL_LEN = 768
STEP_TOKENS = 1024  # vLLM's CPU default, 8192, makes the start-up profile run 10x longer
N_PREDICT = 3
INSPECTOR = f"{Path(__file__).stem}.ExampleInspector"


class ExampleInspector(ShiftInspector, ArcticProbe):
    """Worker extension: each step's path (ShiftInspector) and the rows the
    speculator reads (ArcticProbe)."""


def example_spec(speculator: str) -> dict:
    return {
        "method": "arctic",
        "model": speculator,
        "num_speculative_tokens": N_PREDICT,
        "enable_suffix_decoding": True,
        "disable_by_batch_size": 64,
    }


@pytest.fixture(scope="module")
def swiftkv(tmp_path_factory: pytest.TempPathFactory) -> str:
    """6 layers, 2 with their own K/V, AcrossKV groups of 2; 4 query and 2
    K/V heads (split over 2 ranks on both paths); positions for the long
    prompt."""
    path = write_checkpoint(tmp_path_factory.mktemp("swiftkv"), 2, 2)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    return str(path)


@pytest.fixture(scope="module")
def speculator(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random sum_lstm speculator for the SwiftKV model, in the layout
    ArcticTraining releases: save_speculator's released names, then the
    aliases and per-head copies a ``torch.save`` of ArcticTraining's state
    dict carries, and its config class's config.json (string widths)."""
    from safetensors.torch import load_file

    from arctic_inference_core.speculator import SpeculatorConfig, build_speculator, save_speculator

    root = tmp_path_factory.mktemp("speculator")
    torch.manual_seed(0)
    model = build_speculator(
        SpeculatorConfig(
            method="sum_lstm",
            n_predict=N_PREDICT,
            input_hidden_dim=TINY["hidden_size"],
            inner_dim=64,
            vocab_size=TINY["vocab_size"],
            tie_weights=True,
            scale_input=True,
        )
    )
    save_speculator(model, root / "ours")
    ours = load_file(str(root / "ours" / "model.safetensors"))
    sd = {k: v for k, v in ours.items() if not k.startswith("head.")}
    for gate in ("input", "cell", "output"):
        sd[f"{gate}_emb.0.weight"] = ours["forget_emb.0.weight"]
    for i in range(N_PREDICT):
        sd[f"head.{i}.weight"] = ours["head.0.weight"]
    assert sorted(k.split(".")[0] for k in sd if k.endswith("proj.0.weight")) == [
        "cell_proj",
        "forget_proj",
        "input_proj",
        "output_proj",
    ]
    released = root / "released"
    released.mkdir()
    torch.save(sd, released / "pytorch_model.bin")
    config = {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "base_model_name_or_path": "Snowflake/Llama-3.1-SwiftKV-8B-Instruct",
        "input_hidden_dim": TINY["hidden_size"],
        "inner_dim": "64",
        "proj_dim": "64",
        "emb_dim": "64",
        "model_type": "mlp_speculator",
        "n_candidates": N_PREDICT,
        "n_predict": N_PREDICT,
        "scale_input": True,
        "tie_weights": True,
        "tie_lstm_embs": True,
        "top_k_tokens_per_head": [1] * N_PREDICT,
        "torch_dtype": "float32",
        "transformers_version": "4.51.3",
        "vocab_size": TINY["vocab_size"],
        "method": "sum_lstm",
        "base_model_archs": ["LlamaForCausalLM", "LlamaSwiftKVForCausalLM"],
    }
    (released / "config.json").write_text(json.dumps(config))
    return str(released)


@pytest.fixture(scope="module")
def prompt_ids(swiftkv: str) -> list[list[int]]:
    """The prompts as vLLM tokenizes them."""
    from transformers import AutoTokenizer

    ids = [AutoTokenizer.from_pretrained(swiftkv).encode(p) for p in PROMPTS]
    assert len(ids[0]) > 512 and len(ids[0]) + NEW_TOKENS <= MAX_MODEL_LEN
    return ids


def assert_reference_greedy(swiftkv: str, prompts: list[list[int]], got: list[list[int]]) -> None:
    """``got`` is the greedy continuation of each prompt without speculation
    on one rank: the plain-PyTorch reading (float64) of prompt + ``got``
    predicts every token of ``got`` (one forward pass per prompt instead of
    one per token; the greedy continuation is the only sequence that passes)."""
    for prompt, tokens in zip(prompts, got, strict=True):
        assert len(tokens) == NEW_TOKENS
        logits = reference_logits(Path(swiftkv), prompt + tokens)
        want = logits[len(prompt) - 1 : -1].argmax(-1).tolist()
        assert tokens == want, (len(prompt), tokens, want)


def engine_env(switch: str = SWITCH) -> dict[str, str]:
    """The switch (ours, or Arctic Inference's alias of it), the inspector's
    module on the path, one core per rank."""
    from arctic_inference_vllm.testing import cpu_binding

    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if k not in (SWITCH, LEGACY_ENV)}
    return {**env, switch: "1", "PYTHONPATH": path, "VLLM_CPU_OMP_THREADS_BIND": cpu_binding(2)}


def check_ranks(paths: list[dict], probes: list[dict]) -> None:
    """Both ranks ran the same steps, on both paths; every row the
    speculator read produced its request's last token."""
    assert len(paths) == 2 and paths[0] == paths[1], paths
    assert paths[0]["sp"] >= 1 and paths[0]["tp"] >= NEW_TOKENS // (N_PREDICT + 1), paths
    assert len(probes) == 2 and all(p["rows"] > 0 and p["mismatches"] == 0 for p in probes), probes


# ------------------------------------------------------------ Python


PYTHON_FORM = """
import json, sys

import vllm
from vllm import LLM, SamplingParams


def main(model, speculator, prompts, out):
    vllm.plugins.load_general_plugins()
    llm = LLM(
        model=model,
        tensor_parallel_size=1,
        ulysses_sequence_parallel_size=2,
        enable_shift_parallel=True,
        speculative_config={SPEC},
        # the CPU test machine's settings
        dtype="float32", max_model_len={MAX_MODEL_LEN}, max_num_batched_tokens={STEP_TOKENS},
        kv_cache_memory_bytes={KV_BYTES},
        seed=0, disable_log_stats=False, worker_extension_cls="{INSPECTOR}",
    )
    llm.collective_rpc("arctic_probe_start")
    outs = llm.generate(
        json.loads(prompts),
        SamplingParams(temperature=0.0, max_tokens={NEW_TOKENS}, ignore_eos=True),
        use_tqdm=False,
    )
    metrics = {{m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}}
    with open(out, "w") as f:
        json.dump({{
            "prompts": [list(o.prompt_token_ids) for o in outs],
            "tokens": [list(o.outputs[0].token_ids) for o in outs],
            "paths": llm.collective_rpc("shift_path_counts"),
            "probes": llm.collective_rpc("arctic_probe_stats"),
            "accepted": metrics.get("vllm:spec_decode_num_accepted_tokens", 0),
            "world": llm.llm_engine.vllm_config.parallel_config.world_size,
        }}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
"""


def test_python_form(swiftkv: str, speculator: str, prompt_ids: list, tmp_path: Path) -> None:
    """The Python form in a fresh process, as a user runs it: the keywords
    are known once ``load_general_plugins()`` has run."""
    spec = "{" + ", ".join(f"{k!r}: {v!r}" for k, v in example_spec("SPEC_DIR").items()) + "}"
    script = tmp_path / "example.py"
    script.write_text(
        textwrap.dedent(PYTHON_FORM).format(
            SPEC=spec.replace("'SPEC_DIR'", "speculator"),
            MAX_MODEL_LEN=MAX_MODEL_LEN,
            STEP_TOKENS=STEP_TOKENS,
            KV_BYTES=TEST_KV_CACHE_BYTES,
            INSPECTOR=INSPECTOR,
            NEW_TOKENS=NEW_TOKENS,
        )
    )
    out = tmp_path / "out.json"
    run = subprocess.run(
        [sys.executable, str(script), swiftkv, speculator, json.dumps(PROMPTS), str(out)],
        capture_output=True,
        text=True,
        env=engine_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    got = json.loads(out.read_text())
    assert got["world"] == 2
    assert got["prompts"] == prompt_ids
    assert_reference_greedy(swiftkv, prompt_ids, got["tokens"])
    check_ranks(got["paths"], got["probes"])
    assert got["accepted"] > 0, got


# ------------------------------------------------------------ CLI


def test_cli_form(
    swiftkv: str, speculator: str, prompt_ids: list, tmp_path: Path, vllm_server
) -> None:
    """``vllm serve`` with the example's flags answers OpenAI completions
    (greedy) with the reference's tokens."""
    log = tmp_path / "server.log"
    args = [
        "--tensor-parallel-size", "1",
        "--ulysses-sequence-parallel-size", "2",
        "--enable-shift-parallel",
        "--speculative-config", json.dumps(example_spec(speculator)),
        # the CPU test machine's settings
        "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
        "--max-num-batched-tokens", str(STEP_TOKENS),
        "--worker-extension-cls", INSPECTOR,
    ]  # fmt: skip
    # Arctic Inference's switch, as its docs' command line sets it
    env = {**engine_env(LEGACY_ENV), "VLLM_SERVER_DEV_MODE": "1"}  # /collective_rpc: inspector

    def post(base: str, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            f"{base}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=180) as r:
            return json.load(r)

    with vllm_server(swiftkv, args, log, env) as base:
        post(base, "/collective_rpc", {"method": "arctic_probe_start"})
        out = post(
            base,
            "/v1/completions",
            {
                "model": "tiny",
                "prompt": PROMPTS,
                "max_tokens": NEW_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
                "return_token_ids": True,
            },
        )
        paths = post(base, "/collective_rpc", {"method": "shift_path_counts"})["results"]
        probes = post(base, "/collective_rpc", {"method": "arctic_probe_stats"})["results"]
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
            metrics = r.read().decode()
    choices = sorted(out["choices"], key=lambda c: c["index"])
    assert [c["prompt_token_ids"] for c in choices] == prompt_ids
    assert_reference_greedy(swiftkv, prompt_ids, [c["token_ids"] for c in choices])
    check_ranks(paths, probes)
    accepted = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("vllm:spec_decode_num_accepted_tokens_total")
    ]
    assert accepted and accepted[0] > 0, accepted
    text = log.read_text()
    assert "Shift parallelism on 2 ranks" in text and "speculative method 'arctic'" in text
    assert "SwiftKV: fast prefill off under Ulysses sequence parallelism (SP=2)" in text


# ------------------------------------------------------------ SwiftKV under SP


def test_swiftkv_fast_prefill_is_off_under_sp(swiftkv: str, extras_switch) -> None:
    """Fast prefill's rows are the step's while an SP rank's forward holds a
    slice of them: the SwiftKV hook leaves it off under SP (the example's
    tokens above are right with it off), and refuses vLLM's flag for it."""
    from vllm.engine.arg_utils import EngineArgs

    import arctic_inference_vllm.plugin as plugin

    def config(**kwargs):
        return EngineArgs(
            model=swiftkv, max_model_len=MAX_MODEL_LEN, ulysses_sequence_parallel_size=2, **kwargs
        ).create_engine_config()

    with extras_switch():
        plugin.install_extras()  # this process registered before the switch was on
        assert config(enable_shift_parallel=True).cache_config.kv_sharing_fast_prefill is False
        with pytest.raises(ValueError, match="drop --kv-sharing-fast-prefill"):
            config(kv_sharing_fast_prefill=True)
