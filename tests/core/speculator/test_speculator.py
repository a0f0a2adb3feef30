"""Arctic speculator heads: shapes, greedy drafting against a per-sample
reference loop, checkpoint round trips, published config layouts, errors, and
CUDA-graph friendliness of ``draft`` (no host syncs / data-dependent flow)."""

from __future__ import annotations

import ast
import inspect
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from arctic_inference_core.speculator import (  # noqa: E402
    LSTMSpeculator,
    MLPSpeculator,
    SpeculatorConfig,
    build_speculator,
    draft,
    load_speculator,
    save_speculator,
)

HIDDEN, INNER, VOCAB, NPRED = 24, 16, 97, 4

CONFIGS = [
    pytest.param(dict(method="mlp", tie_weights=False, scale_input=False), id="mlp"),
    pytest.param(dict(method="mlp", tie_weights=True, scale_input=True), id="mlp-tied-scaled"),
    pytest.param(dict(method="sum_lstm", tie_weights=True, scale_input=True), id="lstm-published"),
    pytest.param(dict(method="sum_lstm", tie_weights=False, scale_input=False), id="lstm-untied"),
    pytest.param(
        dict(method="sum_lstm", tie_weights=True, scale_input=False, tie_lstm_embs=False),
        id="lstm-gate-embs",
    ),
]


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64, **kw: object) -> torch.nn.Module:
    cfg = SpeculatorConfig(
        n_predict=NPRED, input_hidden_dim=HIDDEN, inner_dim=INNER, vocab_size=VOCAB, **kw
    )
    torch.manual_seed(seed)
    model = build_speculator(cfg).to(dtype)
    with torch.no_grad():  # non-trivial norms so that every parameter matters
        for name, p in model.named_parameters():
            if "ln." in name:  # ln.*, cell_ln.*, state_ln.* weights and biases
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def inputs(batch: int = 7, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, HIDDEN, generator=g, dtype=torch.float64),
        torch.randint(0, VOCAB, (batch,), generator=g),
    )


# --------------------------------------------------------------- reference
def _rms(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean() + 1e-6)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _pick(sd: dict[str, torch.Tensor], prefix: str, i: int, suffix: str = "weight") -> torch.Tensor:
    """Tensor used by head i: its own, else the last tied copy below it."""
    for j in range(i, -1, -1):
        k = f"{prefix}.{j}.{suffix}"
        if k in sd:
            return sd[k]
    raise KeyError(prefix)


def reference_draft(
    sd: dict[str, torch.Tensor], cfg: SpeculatorConfig, h: torch.Tensor, last: torch.Tensor
) -> list[list[int]]:
    """Straightforward per-sample, per-head loop written from the formulas."""
    sw = 0.5 ** (0.5 / cfg.n_predict)
    ew = math.sqrt((1 - sw**2) * (cfg.inner_dim / 2))
    p = cfg.inner_dim
    out = []
    for b in range(h.shape[0]):
        s, tok, c = h[b].double(), int(last[b]), torch.zeros(p, dtype=torch.float64)
        toks = []
        for i in range(cfg.n_predict):
            if i == 0 and cfg.scale_input:
                s = _rms(s) / math.sqrt(2.0)
            if cfg.method == "mlp":
                x = _pick(sd, "proj", i) @ s + _pick(sd, "emb", i)[tok] * (ew / sw)
                s = _gelu(_pick(sd, "ln", i) * _rms(x) + _pick(sd, "ln", i, "bias"))
            else:
                f = _pick(sd, "forget_emb", i)[tok]
                if cfg.tie_lstm_embs:
                    z = torch.cat([f, f, f, f])
                else:
                    z = torch.cat(
                        [f]
                        + [_pick(sd, n, i)[tok] for n in ("input_emb", "output_emb", "cell_emb")]
                    )
                a = _pick(sd, "projs", i) @ s + z * (ew / sw)
                fg, ig, og = (1 / (1 + torch.exp(-a[k * p : (k + 1) * p])) for k in range(3))
                cand = (
                    _gelu(
                        _pick(sd, "cell_ln", i) * _rms(a[3 * p :]) + _pick(sd, "cell_ln", i, "bias")
                    )
                    * ig
                )
                c = c * fg + cand
                s = (
                    _gelu(_pick(sd, "state_ln", i) * _rms(c) + _pick(sd, "state_ln", i, "bias"))
                    * og
                )
            logits = _pick(sd, "head", i) @ s
            tok = int(torch.argmax(logits))
            toks.append(tok)
        out.append(toks)
    return out


def _sd(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------- tests
def test_top_level_package_does_not_import_torch() -> None:
    code = "import sys, arctic_inference_core; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kw", CONFIGS)
def test_shapes(kw: dict) -> None:
    model = make_model(**kw)
    assert isinstance(model, MLPSpeculator if kw["method"] == "mlp" else LSTMSpeculator)
    h, last = inputs(batch=5)
    out = draft(model, h, last)
    assert out.shape == (5, NPRED) and out.dtype == torch.int64
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB
    assert draft(model, h, last, num_tokens=2).shape == (5, 2)
    assert torch.equal(draft(model, h, last, num_tokens=2), out[:, :2])
    assert torch.equal(model(h, last), out)
    logits = model.forward_logits(h, torch.cat([last[:, None], out[:, :-1]], dim=1))
    assert logits.shape == (5, NPRED, VOCAB)
    # teacher forcing with the greedy tokens reproduces the greedy draft
    assert torch.equal(logits.argmax(-1), out)
    buf = torch.empty(5, NPRED, dtype=torch.int64)
    assert draft(model, h, last, out=buf) is buf and torch.equal(buf, out)
    # batch of one and float32 input to a float64 model
    assert draft(model, h[:1].float(), last[:1]).shape == (1, NPRED)


@pytest.mark.parametrize("kw", CONFIGS)
def test_batched_draft_matches_reference_loop(kw: dict) -> None:
    model = make_model(seed=3, **kw)
    h, last = inputs(batch=9, seed=4)
    got = draft(model, h, last).tolist()
    assert got == reference_draft(_sd(model), model.config, h, last)
    # rows are independent of batch composition
    assert draft(model, h[3:4], last[3:4]).tolist() == [got[3]]


@pytest.mark.parametrize("kw", CONFIGS)
def test_save_load_round_trip(kw: dict, tmp_path: Path) -> None:
    model = make_model(seed=5, dtype=torch.float32, **kw)
    save_speculator(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_speculator(tmp_path)
    assert (
        type(loaded) is type(model)
        and loaded.config.to_dict() == SpeculatorConfig.from_pretrained(tmp_path).to_dict()
    )
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    h, last = inputs(batch=6, seed=6)
    h = h.float()
    assert torch.equal(draft(loaded, h, last), draft(model, h, last))
    assert torch.equal(
        loaded.forward_logits(h, last[:, None]), model.forward_logits(h, last[:, None])
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "mlp_speculator" and cfg["n_predict"] == NPRED
    assert load_speculator(tmp_path, dtype=torch.bfloat16).head[0].weight.dtype == torch.bfloat16


def _write_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    safetensors_torch.save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors")
    )


def _published_lstm(n_predict: int = 3) -> tuple[dict, dict[str, torch.Tensor]]:
    """Shaped like Snowflake's Arctic LSTM speculator checkpoints (tiny dims):
    gate projections stored apart (tests/core/speculator/test_released_layouts.py
    covers the other released variants)."""
    cfg = {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
        "input_hidden_dim": HIDDEN,
        "inner_dim": str(INNER),
        "proj_dim": str(INNER),
        "emb_dim": str(INNER),
        "method": "sum_lstm",
        "model_type": "mlp_speculator",
        "n_candidates": n_predict,
        "n_predict": n_predict,
        "scale_input": True,
        "tie_weights": True,
        "tie_lstm_embs": True,
        "top_k_tokens_per_head": [1] * n_predict,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "vocab_size": VOCAB,
        "base_model_archs": ["LlamaForCausalLM"],
    }
    g = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    tensors = {"forget_emb.0.weight": r(VOCAB, INNER) * 0.2}
    for gate in ("forget", "input", "output", "cell"):
        tensors[f"{gate}_proj.0.weight"] = r(INNER, HIDDEN) * 0.2
        tensors[f"{gate}_proj.1.weight"] = r(INNER, INNER) * 0.2
    tensors.update(
        {
            "cell_ln.0.weight": 1 + 0.3 * r(INNER),
            "cell_ln.0.bias": 0.1 * r(INNER),
            "state_ln.0.weight": 1 + 0.3 * r(INNER),
            "state_ln.0.bias": 0.1 * r(INNER),
            "head.0.weight": r(VOCAB, INNER) * 0.2,
        }
    )
    return cfg, tensors


def _fused(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's reading of split gate projections: concatenated in
    gate order (forget, input, output, cell)."""
    out = {k: v for k, v in tensors.items() if "_proj." not in k}
    for j in (0, 1):
        out[f"projs.{j}.weight"] = torch.cat(
            [tensors[f"{g}_proj.{j}.weight"] for g in ("forget", "input", "output", "cell")]
        )
    return out


def test_load_published_lstm_config(tmp_path: Path) -> None:
    cfg, tensors = _published_lstm()
    tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    # ArcticTraining repeats tied heads once per head: accepted (checked equal)
    tensors["head.1.weight"] = tensors["head.0.weight"].clone()
    tensors["head.2.weight"] = tensors["head.0.weight"].clone()
    _write_checkpoint(tmp_path, cfg, tensors)
    model = load_speculator(tmp_path, dtype=torch.float64)
    assert isinstance(model, LSTMSpeculator)
    c = model.config
    assert (c.method, c.n_predict, c.input_hidden_dim, c.inner_dim, c.vocab_size) == (
        "sum_lstm",
        3,
        HIDDEN,
        INNER,
        VOCAB,
    )
    assert c.tie_weights and c.tie_lstm_embs and c.scale_input
    assert c.base_model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    assert c.base_model_archs == ("LlamaForCausalLM",)
    c.check_compatible(HIDDEN, VOCAB)
    h, last = inputs(batch=5, seed=12)
    sd = {k: v.double() for k, v in _fused(tensors).items()}
    assert draft(model, h, last).tolist() == reference_draft(sd, c, h, last)
    # saving writes the same layout (string dims, method, architecture)
    save_speculator(model, tmp_path / "resaved")
    out = json.loads((tmp_path / "resaved" / "config.json").read_text())
    for key in (
        "architectures",
        "inner_dim",
        "proj_dim",
        "emb_dim",
        "method",
        "input_hidden_dim",
        "n_predict",
        "vocab_size",
        "tie_weights",
        "tie_lstm_embs",
        "scale_input",
        "base_model_archs",
    ):
        assert out[key] == cfg[key], key


def test_load_published_mlp_configs(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(21)
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    n = 3
    # IBM / vLLM MLPSpeculatorPreTrainedModel: emb_dim is the base hidden size
    ibm = {
        "architectures": ["MLPSpeculatorPreTrainedModel"],
        "emb_dim": HIDDEN,
        "inner_dim": INNER,
        "model_type": "mlp_speculator",
        "n_candidates": n,
        "n_predict": n,
        "scale_input": False,
        "tie_weights": False,
        "top_k_tokens_per_head": [1] * n,
        "torch_dtype": "float16",
        "vocab_size": VOCAB,
    }
    tensors = {}
    for i in range(n):
        tensors[f"emb.{i}.weight"] = r(VOCAB, INNER)
        tensors[f"proj.{i}.weight"] = r(INNER, HIDDEN if i == 0 else INNER)
        tensors[f"ln.{i}.weight"] = 1 + r(INNER)
        tensors[f"ln.{i}.bias"] = r(INNER)
        tensors[f"head.{i}.weight"] = r(VOCAB, INNER)
    _write_checkpoint(tmp_path / "ibm", ibm, tensors)
    model = load_speculator(tmp_path / "ibm", dtype=torch.float64)
    assert isinstance(model, MLPSpeculator) and model.config.input_hidden_dim == HIDDEN
    h, last = inputs(batch=4, seed=22)
    sd = {k: v.double() for k, v in tensors.items()}
    assert draft(model, h, last).tolist() == reference_draft(sd, model.config, h, last)

    # ArcticTraining LSTM-config class without "method" = "sum_rnn" MLP head,
    # tied, with nn.Sequential-wrapped tensor names
    arctic = {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "input_hidden_dim": HIDDEN,
        "inner_dim": str(INNER),
        "proj_dim": str(INNER),
        "emb_dim": str(INNER),
        "model_type": "mlp_speculator",
        "n_predict": n,
        "vocab_size": VOCAB,
        "tie_weights": True,
        "scale_input": True,
        "tie_lstm_embs": False,
        "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
    }
    seq = {
        "emb.0.0.weight": tensors["emb.0.weight"],
        "proj.0.0.weight": tensors["proj.0.weight"],
        "proj.1.0.weight": tensors["proj.1.weight"],
        "ln.0.0.weight": tensors["ln.0.weight"],
        "ln.0.0.bias": tensors["ln.0.bias"],
        "head.0.weight": tensors["head.0.weight"],
    }
    _write_checkpoint(tmp_path / "arctic", arctic, seq)
    model = load_speculator(tmp_path / "arctic", dtype=torch.float64)
    assert (
        isinstance(model, MLPSpeculator) and model.config.tie_weights and model.config.scale_input
    )
    tied = (
        "emb.0.weight",
        "proj.0.weight",
        "proj.1.weight",
        "ln.0.weight",
        "ln.0.bias",
        "head.0.weight",
    )
    sd = {k: tensors[k].double() for k in tied}
    assert draft(model, h, last).tolist() == reference_draft(sd, model.config, h, last)


# ------------------------------------------------------------ negative tests
def _base_cfg() -> dict:
    return _published_lstm()[0]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("n_predict"), "missing required key 'n_predict'"),
        (lambda d: d.pop("input_hidden_dim"), "missing required key 'input_hidden_dim'"),
        (lambda d: d.pop("vocab_size"), "missing required key 'vocab_size'"),
        (lambda d: d.update(n_predict=0), "n_predict must be >= 1"),
        (lambda d: d.update(n_predict=-2), "n_predict must be >= 1"),
        (lambda d: d.update(method="sum_gru"), "unsupported method 'sum_gru'"),
        (
            lambda d: d.update(architectures=["LlamaForCausalLM"]),
            "unsupported architecture 'LlamaForCausalLM'",
        ),
        (lambda d: d.update(inner_dim=f"{INNER}.8"), "a sum_lstm head is one layer"),
        (lambda d: d.update(proj_dim="8"), "proj_dim='8': a sum_lstm head is one layer"),
        (lambda d: d.update(emb_dim="x"), "'emb_dim' must be an integer"),
        (lambda d: d.update(tie_weights="yes"), "'tie_weights' must be true/false"),
    ],
)
def test_bad_config(mutate, match: str) -> None:
    d = _base_cfg()
    mutate(d)
    with pytest.raises(ValueError, match=match):
        SpeculatorConfig.from_dict(d)


def test_dataclass_validation() -> None:
    with pytest.raises(ValueError, match="n_predict must be >= 1"):
        SpeculatorConfig(method="mlp", n_predict=0, input_hidden_dim=8, inner_dim=8, vocab_size=10)
    with pytest.raises(ValueError, match="unknown method"):
        SpeculatorConfig(method="rnn", n_predict=1, input_hidden_dim=8, inner_dim=8, vocab_size=10)
    with pytest.raises(ValueError, match="MLPSpeculator needs method='mlp'"):
        MLPSpeculator(
            SpeculatorConfig(
                method="sum_lstm", n_predict=1, input_hidden_dim=8, inner_dim=8, vocab_size=10
            )
        )


def test_check_compatible() -> None:
    model = make_model(method="sum_lstm", tie_weights=True)
    model.check_compatible(HIDDEN, VOCAB)
    with pytest.raises(
        ValueError,
        match=f"vocab size mismatch: speculator has vocab_size={VOCAB}, base model has vocab_size=128256",
    ):
        model.check_compatible(HIDDEN, 128256)
    with pytest.raises(
        ValueError,
        match=f"hidden size mismatch: speculator expects input_hidden_dim={HIDDEN}, base model has hidden_size=4096",
    ):
        model.config.check_compatible(4096, VOCAB)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.pop("head.0.weight"), r"missing tensor\(s\) head.0.weight"),
        (
            lambda t: t.update({"cell_ln.0.weight": torch.zeros(INNER + 1)}),
            r"tensor 'cell_ln.0.weight' has shape \(17,\), expected \(16,\)",
        ),
        (
            lambda t: t.update({"head.0.weight": torch.zeros(VOCAB + 3, INNER)}),
            r"tensor 'head.0.weight' has shape \(100, 16\), expected \(97, 16\)",
        ),
        (
            lambda t: t.update({"head.1.weight": torch.zeros(VOCAB, 3)}),
            r"'head.1.weight' \(tied to 'head.0.weight'\) has shape",
        ),
        (
            lambda t: t.update({"mystery.weight": torch.zeros(3)}),
            r"unexpected tensor\(s\) 'mystery.weight'",
        ),
        (
            lambda t: t.update({"input_emb.0.weight": torch.zeros(VOCAB, INNER)}),
            "'input_emb.0.weight' differs from 'forget_emb.0.weight', but tie_lstm_embs is true",
        ),
        (
            lambda t: t.update({"head.0.weight": torch.zeros(VOCAB, INNER, dtype=torch.int32)}),
            "non-float dtype",
        ),
    ],
)
def test_bad_checkpoint_tensors(tmp_path: Path, edit, match: str) -> None:
    cfg, tensors = _published_lstm()
    edit(tensors)
    _write_checkpoint(tmp_path, cfg, tensors)
    with pytest.raises(ValueError, match=match):
        load_speculator(tmp_path)


def test_fused_projections_of_earlier_saves_load(tmp_path: Path) -> None:
    """Before 0.3.0 ``save_speculator`` wrote an LSTM's gate projections
    already concatenated (``projs.{j}.weight``); such directories still load."""
    cfg, tensors = _published_lstm()
    fused = {"speculator." + k: v for k, v in _fused(tensors).items()}
    _write_checkpoint(tmp_path, cfg, fused)
    model = load_speculator(tmp_path, dtype=torch.float64)
    h, last = inputs(batch=5, seed=13)
    sd = {k: v.double() for k, v in _fused(tensors).items()}
    assert draft(model, h, last).tolist() == reference_draft(sd, model.config, h, last)


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        load_speculator(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json"):
        load_speculator(tmp_path)
    cfg, _ = _published_lstm()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no weights in"):
        load_speculator(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_speculator(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_speculator(tmp_path)
    with pytest.raises(TypeError, match="expected MLPSpeculator or LSTMSpeculator"):
        save_speculator(torch.nn.Linear(2, 2), tmp_path / "x")


def test_draft_argument_errors() -> None:
    model = make_model(method="mlp")
    h, last = inputs(batch=3)
    with pytest.raises(ValueError, match=r"num_tokens must be an int in \[1, 4\]"):
        draft(model, h, last, num_tokens=5)
    with pytest.raises(ValueError, match=r"num_tokens must be an int in \[1, 4\]"):
        draft(model, h, last, num_tokens=0)
    with pytest.raises(ValueError, match=r"hidden_states must be \[batch, 24\]"):
        draft(model, h[:, :5], last)
    with pytest.raises(ValueError, match=r"last_tokens must be \[batch=3\]"):
        draft(model, h, last[:2])
    with pytest.raises(ValueError, match="integer tensor"):
        draft(model, h, last.double())
    with pytest.raises(ValueError, match="out must be int64"):
        draft(model, h, last, out=torch.empty(3, 4, dtype=torch.int32))


def test_graph_drafter_off_cuda_is_draft() -> None:
    from arctic_inference_core.speculator import GraphDrafter

    model = make_model(method="sum_lstm")
    h, last = inputs(batch=5)
    drafter = GraphDrafter(model, max_batch_size=4)
    assert not drafter.enabled and drafter.max_batch_size == 4
    assert torch.equal(drafter(h, last, 2), draft(model, h, last, 2))
    assert drafter.num_graphs == 0
    with pytest.raises(ValueError, match=r"last_tokens must be \[batch=5\]"):
        drafter(h, last[:2])
    with pytest.raises(ValueError, match="max_batch_size must be an int >= 1"):
        GraphDrafter(model, max_batch_size=0)


# ------------------------------------------------------- CUDA-graph friendly
@pytest.mark.parametrize("kw", [CONFIGS[1], CONFIGS[2]])
def test_draft_compiles_as_one_graph(kw: dict) -> None:
    """fullgraph=True fails on graph breaks (``.item()``, ``.tolist()``) and on
    Python control flow that depends on tensor values."""
    torch._dynamo.reset()
    model = make_model(dtype=torch.float32, **kw)
    h, last = inputs(batch=4, seed=7)
    h = h.float()
    compiled = torch.compile(lambda x, t: draft(model, x, t), fullgraph=True, backend="eager")
    assert torch.equal(compiled(h, last), draft(model, h, last))


def test_fullgraph_check_catches_host_sync() -> None:
    """Sanity check of the test above: a data-dependent branch is rejected."""
    torch._dynamo.reset()
    model = make_model(dtype=torch.float32, method="mlp")
    h, last = inputs(batch=2)

    def syncing(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = draft(model, x, t)
        if out.sum().item() > 0:
            return out
        return out + 1

    with pytest.raises(Exception):  # noqa: B017 - the compiler's error type varies by version
        torch.compile(syncing, fullgraph=True, backend="eager")(h.float(), last)


def test_no_host_sync_calls_in_draft_path() -> None:
    """Static check: no syncing calls in draft() or the heads' step()."""
    banned = {"item", "tolist", "cpu", "numpy", "nonzero", "synchronize", "any", "all"}
    sources = [
        draft,
        MLPSpeculator.step,
        LSTMSpeculator.step,
        LSTMSpeculator._token_emb,
        LSTMSpeculator.initial_cell,
    ]
    for fn in sources:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in banned, f"{fn.__qualname__} calls .{node.func.attr}()"
            if isinstance(node, (ast.If, ast.While)) and not (
                isinstance(node.test, ast.Compare)
                and all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.test.ops)
            ):  # `x is None` is fine: it does not read tensor data
                # conditions may only look at shapes/static attributes, never tensors
                names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
                assert not names & {"state", "cell", "logits", "tokens", "result", "z", "a"}, (
                    f"{fn.__qualname__}: data-dependent branch"
                )
