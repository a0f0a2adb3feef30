"""The released speculator checkpoint layouts (what ArcticTraining writes and
Snowflake's Arctic Inference 0.3.0 loads) load here to the same drafts as a
straightforward reference reading of the layout, and ``save_speculator``
writes that layout back.

Each test builds its tiny checkpoint the way the releasing tools do
(ArcticTraining's ``ArcticLSTMSpeculator`` state dict saved with
``torch.save``, fms-extras' tied MLP state dict, ...). The reference below
reads a checkpoint with Arctic Inference's rules (its config through vLLM's
``MLPSpeculatorConfig``; its ``load_weights``: alias pops, gate projections
concatenated, ``speculator.`` stripped, unknown names ignored) and drafts
with its formulas, per sample in float64; it shares no code with
``arctic_inference_core.speculator``. Arctic's own loader cannot be imported
without vLLM's GPU parts, so this reading stands in for it.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

HIDDEN, P, VOCAB = 24, 16, 97
GATES = ("forget", "input", "output", "cell")


# ============================================================ the reference
def _arctic_config(d: dict[str, Any], *, coerce_emb_dim: bool = True) -> dict[str, Any]:
    """config.json as Arctic Inference 0.3.0 sees it: vLLM's
    ``MLPSpeculatorConfig`` (defaults, its assert on top_k_tokens_per_head)
    and Arctic's patch of it, which sets ``hidden_size`` (an alias of
    ``emb_dim``) to ``int(hidden_size)``."""
    c = {
        "vocab_size": 32000,
        "emb_dim": 4096,
        "inner_dim": 0,
        "n_predict": 3,
        "tie_weights": False,
        "scale_input": False,
        **d,
    }
    top_k = c.get("top_k_tokens_per_head") or [5, 4, 3]
    assert len(top_k) == c["n_predict"], "vLLM's MLPSpeculatorConfig asserts this"
    if coerce_emb_dim:
        c["emb_dim"] = int(c["emb_dim"])
    return c


def _arctic_dims(value: Any) -> list[int]:
    """Arctic Inference's ``_parse_dim``."""
    if isinstance(value, str):
        return [int(i) for i in value.split(".")]
    if isinstance(value, int):
        return [value]
    return [int(i) for i in value]


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        return dict(safetensors_torch.load_file(str(path / "model.safetensors")))
    return dict(torch.load(path / "pytorch_model.bin", weights_only=True))


def _arctic_params(path: Path, c: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Arctic Inference's ``load_weights``: the parameters it would load (names
    its model does not have are ignored there, and here never looked up)."""
    w = OrderedDict(_read_weights(path))
    arch = c["architectures"][0]
    if arch != "ArcticMLPSpeculatorPreTrainedModel" and c.get("method", "sum_rnn") == "sum_lstm":
        if c["tie_lstm_embs"]:
            try:
                for name in ("input_emb.0.weight", "cell_emb.0.weight", "output_emb.0.weight"):
                    w.pop(name)
            except KeyError:
                pass
        n_projs = 2 if c["tie_weights"] else c["n_predict"]
        for j in range(n_projs):
            w[f"projs.{j}.weight"] = torch.cat([w.pop(f"{g}_proj.{j}.weight") for g in GATES])
    return {name.replace("speculator.", ""): t.double() for name, t in w.items()}


def _rms(x: torch.Tensor, w: torch.Tensor | None = None, b: torch.Tensor | None = None):
    y = x * torch.rsqrt(x.pow(2).mean() + 1e-6)
    return y if w is None else w * y + b


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _ln(w: dict[str, torch.Tensor], name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: _rms(x, w[f"{name}.weight"], w[f"{name}.bias"])


def reference(
    path: Path, h: torch.Tensor, last: torch.Tensor, *, coerce_emb_dim: bool = True
) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy drafts [batch][n_predict] and their logits [batch, n_predict, vocab]."""
    c = _arctic_config(
        json.loads((path / "config.json").read_text()), coerce_emb_dim=coerce_emb_dim
    )
    w = _arctic_params(path, c)
    arch, n, tie = c["architectures"][0], c["n_predict"], c["tie_weights"]
    if arch == "ArcticMLPSpeculatorPreTrainedModel":
        method = "ibm"
        inner0 = c["inner_dim"] or c["emb_dim"]
    else:
        method = c.get("method", "sum_rnn")
        inner = _arctic_dims(c["inner_dim"])
        emb, proj = _arctic_dims(c["emb_dim"]), _arctic_dims(c["proj_dim"])
        inner0 = inner[0]
    sw = 0.5 ** (0.5 / n)
    alpha = math.sqrt((1 - sw**2) * (inner0 / 2)) / sw
    drafts, all_logits = [], []
    for b in range(h.shape[0]):
        s, tok = h[b].double(), int(last[b])
        cell = torch.zeros(inner0, dtype=torch.float64)
        toks, logits_b = [], []
        for i in range(n):
            if i == 0 and c["scale_input"]:
                s = _rms(s) / math.sqrt(2.0)
            ai = 0 if tie else i  # Arctic's actual_i
            pi = 1 if tie and i >= 2 else i  # actual_proj_i
            if method == "ibm":
                x = w[f"proj.{pi}.weight"] @ s + w[f"emb.{ai}.weight"][tok] * alpha
                s = _gelu(_ln(w, f"ln.{ai}")(x))
            elif method == "sum_lstm":
                assert tie, "Arctic Inference asserts tie_weights for sum_lstm"
                p = proj[0]
                f = w["forget_emb.0.weight"][tok]
                if c["tie_lstm_embs"]:
                    z = f.repeat(4)
                else:  # ArcticTraining's untied gate embeddings (Arctic Inference refuses them)
                    z = torch.cat([f] + [w[f"{g}_emb.0.weight"][tok] for g in GATES[1:]])
                a = w[f"projs.{pi}.weight"] @ s + z * alpha
                fg, ig, og = (torch.sigmoid(a[k * p : (k + 1) * p]) for k in range(3))
                cell = cell * fg + _gelu(_ln(w, "cell_ln.0")(a[3 * p :])) * ig
                s = _gelu(_ln(w, "state_ln.0")(cell)) * og
            else:  # sum_rnn: nn.Sequential stacks
                z = w[f"emb.{ai}.0.weight"][tok]
                for k in range(1, len(emb)):  # norm, GELU, Linear
                    z = w[f"emb.{ai}.{3 * k}.weight"] @ _gelu(_ln(w, f"emb.{ai}.{3 * k - 2}")(z))
                x = w[f"proj.{pi}.0.weight"] @ s
                for k in range(1, len(proj)):
                    x = w[f"proj.{pi}.{3 * k}.weight"] @ _gelu(_ln(w, f"proj.{pi}.{3 * k - 2}")(x))
                x = _ln(w, f"ln.{ai}.0")(x + z * alpha)
                for k in range(1, len(inner)):  # GELU, Linear, norm
                    x = _ln(w, f"ln.{ai}.{3 * k}")(w[f"ln.{ai}.{3 * k - 1}.weight"] @ _gelu(x))
                s = _gelu(x)
            logits = w[f"head.{0 if tie else i}.weight"] @ s
            tok = int(torch.argmax(logits))
            toks.append(tok)
            logits_b.append(logits)
        drafts.append(toks)
        all_logits.append(torch.stack(logits_b))
    return drafts, torch.stack(all_logits)


# ============================================================ the builders
def _rand(g: torch.Generator, *shape: int, scale: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _norm(g: torch.Generator, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return 1 + _rand(g, width), _rand(g, width, scale=0.1)


def _lstm_config(n: int, **kw: Any) -> dict[str, Any]:
    """ArcticTraining's ArcticLSTMSpeculatorConfig.__dict__ (+ base_model_archs,
    which the published configs carry)."""
    return {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
        "input_hidden_dim": HIDDEN,
        "inner_dim": str(P),
        "proj_dim": str(P),
        "emb_dim": str(P),
        "model_type": "mlp_speculator",
        "n_candidates": n,
        "n_predict": n,
        "scale_input": True,
        "tie_weights": True,
        "tie_lstm_embs": True,
        "top_k_tokens_per_head": [1] * n,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "vocab_size": VOCAB,
        "method": "sum_lstm",
        "base_model_archs": ["LlamaForCausalLM", "LlamaSwiftKVForCausalLM"],
        **kw,
    }


def lstm_tensors(n: int, *, tie_lstm_embs: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """ArcticTraining's ``ArcticLSTMSpeculator.state_dict()`` for sum_lstm:
    ``input_emb``/``cell_emb``/``output_emb`` the very tensor of ``forget_emb``
    when tied, four gate projections per input, n_predict tied heads."""
    g = torch.Generator().manual_seed(seed)
    forget = _rand(g, VOCAB, P)
    sd: dict[str, torch.Tensor] = {"forget_emb.0.weight": forget}
    for gate in ("input", "cell", "output"):
        sd[f"{gate}_emb.0.weight"] = forget if tie_lstm_embs else _rand(g, VOCAB, P)
    for gate in ("forget", "input", "cell", "output"):
        sd[f"{gate}_proj.0.weight"] = _rand(g, P, HIDDEN)
        sd[f"{gate}_proj.1.weight"] = _rand(g, P, P)
    for name in ("cell_ln", "state_ln"):
        sd[f"{name}.0.weight"], sd[f"{name}.0.bias"] = _norm(g, P)
    head = _rand(g, VOCAB, P)
    for i in range(n):
        sd[f"head.{i}.weight"] = head
    return sd


def rnn_tensors(
    n: int,
    *,
    tie: bool,
    emb: tuple[int, ...] = (P,),
    proj: tuple[int, ...] = (P,),
    inner: tuple[int, ...] = (P,),
    seed: int = 1,
) -> dict[str, torch.Tensor]:
    """ArcticTraining's ``ArcticLSTMSpeculator.state_dict()`` for sum_rnn
    (``nn.Sequential`` stacks; tied: emb/ln 0, proj 0 and 1, n tied heads)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i in range(n if not tie else 1):
        sd[f"emb.{i}.0.weight"] = _rand(g, VOCAB, emb[0])
        for k in range(1, len(emb)):
            sd[f"emb.{i}.{3 * k - 2}.weight"], sd[f"emb.{i}.{3 * k - 2}.bias"] = _norm(g, emb[k])
            sd[f"emb.{i}.{3 * k}.weight"] = _rand(g, emb[k], emb[k - 1])
    for i in range(n if not tie else min(n, 2)):
        sd[f"proj.{i}.0.weight"] = _rand(g, proj[0], HIDDEN if i == 0 else inner[-1])
        for k in range(1, len(proj)):
            sd[f"proj.{i}.{3 * k - 2}.weight"], sd[f"proj.{i}.{3 * k - 2}.bias"] = _norm(g, proj[k])
            sd[f"proj.{i}.{3 * k}.weight"] = _rand(g, proj[k], proj[k - 1])
    for i in range(n if not tie else 1):
        sd[f"ln.{i}.0.weight"], sd[f"ln.{i}.0.bias"] = _norm(g, inner[0])
        for k in range(1, len(inner)):
            sd[f"ln.{i}.{3 * k - 1}.weight"] = _rand(g, inner[k], inner[k - 1])
            sd[f"ln.{i}.{3 * k}.weight"], sd[f"ln.{i}.{3 * k}.bias"] = _norm(g, inner[k])
    head = _rand(g, VOCAB, inner[-1])
    for i in range(n):
        sd[f"head.{i}.weight"] = head if tie else _rand(g, VOCAB, inner[-1])
    return sd


def fms_mlp_tensors(n: int, *, tie: bool, seed: int = 2) -> dict[str, torch.Tensor]:
    """fms-extras ``MLPSpeculator.state_dict()``: with tie_weights every head
    index is present, sharing emb/ln/head 0 and proj 1."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i in range(n):
        sd[f"emb.{i}.weight"] = sd["emb.0.weight"] if tie and i else _rand(g, VOCAB, P)
        sd[f"proj.{i}.weight"] = (
            sd["proj.1.weight"] if tie and i > 1 else _rand(g, P, HIDDEN if i == 0 else P)
        )
        if tie and i:
            sd[f"ln.{i}.weight"], sd[f"ln.{i}.bias"] = sd["ln.0.weight"], sd["ln.0.bias"]
        else:
            sd[f"ln.{i}.weight"], sd[f"ln.{i}.bias"] = _norm(g, P)
        sd[f"head.{i}.weight"] = sd["head.0.weight"] if tie and i else _rand(g, VOCAB, P)
    return sd


def write(
    path: Path,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    fmt: str = "bin",
    prefix: str = "",
) -> Path:
    """A checkpoint directory; ``.bin`` keeps shared tensors shared (like
    ``torch.save`` of ArcticTraining's state dict), safetensors gets copies."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    named = {prefix + k: v for k, v in tensors.items()}
    if fmt == "bin":
        torch.save(named, path / "pytorch_model.bin")
    else:
        safetensors_torch.save_file(
            {k: v.clone().contiguous() for k, v in named.items()}, str(path / "model.safetensors")
        )
    return path


def inputs(batch: int = 6, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, HIDDEN, generator=g, dtype=torch.float64),
        torch.randint(0, VOCAB, (batch,), generator=g),
    )


def assert_same_as_reference(model: Any, ckpt: Path, **ref_kw: Any) -> None:
    h, last = inputs()
    want, want_logits = reference(ckpt, h, last, **ref_kw)
    assert draft(model, h, last).tolist() == want
    # teacher-forced on the reference's tokens: the same logits for every head
    forced = torch.cat([last[:, None], torch.tensor(want)[:, :-1]], dim=1)
    got_logits = model.forward_logits(h, forced)
    assert torch.allclose(got_logits, want_logits, atol=1e-9, rtol=1e-9)


# ============================================================ loading
LSTM_CASES = {
    # ArcticTraining's own output: pytorch_model.bin, aliases and tied heads shared
    "lstm-bin": dict(config={}, fmt="bin"),
    # the same converted to safetensors (copies), the legacy architecture name, int dims
    "lstm-safetensors-mlpvariant": dict(
        config=dict(
            architectures=["MLPVariantSpeculatorPreTrainedModel"],
            inner_dim=P,
            proj_dim=P,
            emb_dim=P,
            scale_input=False,
        ),
        fmt="safetensors",
    ),
    "lstm-list-dims": dict(config=dict(inner_dim=[P], proj_dim=[str(P)]), fmt="bin"),
    # a dotted width repeating the LSTM's one width: Arctic reads [0] and [-1]
    "lstm-dotted-dims": dict(config=dict(inner_dim=f"{P}.{P}"), fmt="bin"),
    "lstm-n1": dict(config=dict(n_predict=1, n_candidates=1, top_k_tokens_per_head=[1]), n=1),
    "lstm-n5": dict(config=dict(n_predict=5, n_candidates=5, top_k_tokens_per_head=[1] * 5), n=5),
    # no aliases at all (Arctic's loader skips their pops when absent)
    "lstm-no-aliases": dict(config={}, fmt="safetensors", drop_aliases=True),
}


@pytest.mark.parametrize("case", list(LSTM_CASES), ids=list(LSTM_CASES))
def test_arctictraining_lstm_checkpoints_load(tmp_path: Path, case: str) -> None:
    spec = LSTM_CASES[case]
    n = spec.get("n", 3)
    tensors = lstm_tensors(n)
    if spec.get("drop_aliases"):
        tensors = {
            k: v
            for k, v in tensors.items()
            if not k.startswith(("input_emb", "cell_emb", "output_emb"))
        }
    ckpt = write(tmp_path, _lstm_config(n, **spec["config"]), tensors, fmt=spec.get("fmt", "bin"))
    model = load_speculator(ckpt, dtype=torch.float64)
    assert isinstance(model, LSTMSpeculator)
    c = model.config
    assert (c.n_predict, c.inner_dim, c.input_hidden_dim, c.vocab_size) == (n, P, HIDDEN, VOCAB)
    assert c.tie_weights and c.tie_lstm_embs and c.layout == "sum_lstm"
    assert c.base_model_archs == ("LlamaForCausalLM", "LlamaSwiftKVForCausalLM")
    assert_same_as_reference(model, ckpt)


def test_prefixed_lstm_checkpoint_loads(tmp_path: Path) -> None:
    """A ``speculator.`` prefix (the speculator saved attached to its base
    model). Arctic Inference's sum_lstm loader pops the split names before it
    strips the prefix, so the reference reads the unprefixed twin."""
    tensors = lstm_tensors(3)
    plain = write(tmp_path / "plain", _lstm_config(3), tensors)
    prefixed = write(
        tmp_path / "prefixed", _lstm_config(3), tensors, fmt="safetensors", prefix="speculator."
    )
    assert_same_as_reference(load_speculator(prefixed, dtype=torch.float64), plain)


def test_untied_gate_embeddings_load(tmp_path: Path) -> None:
    """``tie_lstm_embs: false`` (ArcticTraining trains it; Arctic Inference
    asserts against it): one embedding per gate, concatenated in gate order."""
    tensors = lstm_tensors(3, tie_lstm_embs=False)
    ckpt = write(tmp_path, _lstm_config(3, tie_lstm_embs=False), tensors)
    model = load_speculator(ckpt, dtype=torch.float64)
    assert not model.config.tie_lstm_embs
    assert_same_as_reference(model, ckpt)


RNN_CASES = {
    # method absent: ArcticTraining's and Arctic Inference's default "sum_rnn"
    "rnn-tied-no-method": dict(config=dict(method=None), tie=True),
    "rnn-untied": dict(
        config=dict(method="sum_rnn", tie_weights=False, scale_input=False), tie=False
    ),
    "rnn-stacked-proj-inner": dict(
        config=dict(method="sum_rnn", proj_dim=f"{P}.{P}", inner_dim=f"{P}.12"),
        tie=True,
        proj=(P, P),
        inner=(P, 12),
    ),
    "rnn-stacked-untied-list-dims": dict(
        config=dict(method="sum_rnn", tie_weights=False, inner_dim=[P, 12, 10]),
        tie=False,
        inner=(P, 12, 10),
    ),
}


@pytest.mark.parametrize("case", list(RNN_CASES), ids=list(RNN_CASES))
def test_arctictraining_sum_rnn_checkpoints_load(tmp_path: Path, case: str) -> None:
    spec = RNN_CASES[case]
    config = {
        k: v
        for k, v in {**_lstm_config(3, tie_lstm_embs=False), **spec["config"]}.items()
        if v is not None
    }
    dims = {k: spec[k] for k in ("proj", "inner") if k in spec}
    ckpt = write(tmp_path, config, rnn_tensors(3, tie=spec["tie"], **dims))
    model = load_speculator(ckpt, dtype=torch.float64)
    assert isinstance(model, MLPSpeculator) and model.config.layout == "sum_rnn"
    assert model.config.stacked == bool(dims)
    assert_same_as_reference(model, ckpt)


def test_stacked_embedding_loads(tmp_path: Path) -> None:
    """A dotted ``emb_dim`` stacks embedding layers (ArcticTraining). Arctic
    Inference 0.3.0 itself cannot read it (its config patch calls
    ``int(emb_dim)``); the reference reads it without that step."""
    config = _lstm_config(3, method="sum_rnn", emb_dim=f"{P}.{P}", tie_lstm_embs=False)
    ckpt = write(tmp_path, config, rnn_tensors(3, tie=True, emb=(P, P)))
    with pytest.raises(ValueError, match="invalid literal for int"):
        reference(ckpt, *inputs())
    model = load_speculator(ckpt, dtype=torch.float64)
    assert model.config.emb_dims == (P, P)
    assert_same_as_reference(model, ckpt, coerce_emb_dim=False)


@pytest.mark.parametrize("prefix", ["", "speculator."])
@pytest.mark.parametrize("tie", [True, False])
def test_fms_mlp_checkpoints_load(tmp_path: Path, tie: bool, prefix: str) -> None:
    """``ArcticMLPSpeculatorPreTrainedModel`` (IBM dims: emb_dim is the base
    hidden size), fms-extras tensors with every tied copy present."""
    n = 4
    config = {
        "architectures": ["ArcticMLPSpeculatorPreTrainedModel"],
        "emb_dim": HIDDEN,
        "inner_dim": P,
        "model_type": "mlp_speculator",
        "n_candidates": n,
        "n_predict": n,
        "scale_input": tie,
        "tie_weights": tie,
        "top_k_tokens_per_head": [1] * n,
        "vocab_size": VOCAB,
    }
    ckpt = write(tmp_path, config, fms_mlp_tensors(n, tie=tie), prefix=prefix)
    model = load_speculator(ckpt, dtype=torch.float64)
    assert isinstance(model, MLPSpeculator) and model.config.layout == "mlp"
    assert_same_as_reference(model, ckpt)


def test_sharded_bin_checkpoint_loads(tmp_path: Path) -> None:
    tensors = lstm_tensors(3)
    (tmp_path / "config.json").write_text(json.dumps(_lstm_config(3)))
    names = sorted(tensors)
    shards = {
        "pytorch_model-00001-of-00002.bin": names[:5],
        "pytorch_model-00002-of-00002.bin": names[5:],
    }
    for shard, keys in shards.items():
        torch.save({k: tensors[k].clone() for k in keys}, tmp_path / shard)
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {k: s for s, keys in shards.items() for k in keys}})
    )
    model = load_speculator(tmp_path, dtype=torch.float64)
    write(tmp_path / "whole", _lstm_config(3), tensors)
    assert_same_as_reference(model, tmp_path / "whole")


# ============================================================ saving
def _our_model(layout: str, seed: int = 7) -> Any:
    kw: dict[str, Any] = dict(n_predict=3, input_hidden_dim=HIDDEN, inner_dim=P, vocab_size=VOCAB)
    if layout == "sum_lstm":
        kw.update(method="sum_lstm", tie_weights=True, scale_input=True)
    elif layout == "mlp":
        kw.update(method="mlp", tie_weights=True)
    elif layout == "sum_rnn":
        kw.update(
            method="mlp",
            tie_weights=True,
            tie_lstm_embs=False,
            architecture="ArcticLSTMSpeculatorPreTrainedModel",
        )
    else:  # stacked sum_rnn
        kw.update(
            method="mlp",
            tie_weights=True,
            tie_lstm_embs=False,
            proj_dims=(P, P),
            inner_dims=(P, 12),
        )
    torch.manual_seed(seed)
    model = build_speculator(SpeculatorConfig(**kw, base_model_archs=("LlamaForCausalLM",)))
    with torch.no_grad():  # non-trivial norms
        for name, p in model.named_parameters():
            if "ln." in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.double().eval()


SAVED_NAMES = {
    "sum_lstm": {
        "forget_emb.0.weight",
        "cell_ln.0.weight",
        "cell_ln.0.bias",
        "state_ln.0.weight",
        "state_ln.0.bias",
        "head.0.weight",
    }
    | {f"{g}_proj.{j}.weight" for g in GATES for j in (0, 1)},
    "mlp": {
        "emb.0.weight",
        "proj.0.weight",
        "proj.1.weight",
        "ln.0.weight",
        "ln.0.bias",
        "head.0.weight",
    },
    "sum_rnn": {
        "emb.0.0.weight",
        "proj.0.0.weight",
        "proj.1.0.weight",
        "ln.0.0.weight",
        "ln.0.0.bias",
        "head.0.weight",
    },
    "sum_rnn-stacked": {"emb.0.0.weight", "head.0.weight"}
    | {f"proj.{j}.{k}.weight" for j in (0, 1) for k in (0, 1, 3)}
    | {"proj.0.1.bias", "proj.1.1.bias"}
    | {"ln.0.0.weight", "ln.0.0.bias", "ln.0.2.weight", "ln.0.3.weight", "ln.0.3.bias"},
}
SAVED_CONFIG = {
    "sum_lstm": {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "method": "sum_lstm",
        "input_hidden_dim": HIDDEN,
        "inner_dim": str(P),
        "proj_dim": str(P),
        "emb_dim": str(P),
        "tie_lstm_embs": True,
        "tie_weights": True,
    },
    "mlp": {
        "architectures": ["ArcticMLPSpeculatorPreTrainedModel"],
        "emb_dim": HIDDEN,
        "inner_dim": P,
        "tie_weights": True,
    },
    "sum_rnn": {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "method": "sum_rnn",
        "inner_dim": str(P),
        "proj_dim": str(P),
        "emb_dim": str(P),
        "tie_lstm_embs": False,
    },
    "sum_rnn-stacked": {
        "architectures": ["ArcticLSTMSpeculatorPreTrainedModel"],
        "method": "sum_rnn",
        "inner_dim": f"{P}.12",
        "proj_dim": f"{P}.{P}",
        "emb_dim": str(P),
    },
}


@pytest.mark.parametrize("layout", list(SAVED_NAMES))
def test_save_writes_the_released_layout(tmp_path: Path, layout: str) -> None:
    """Heads built here are saved in the layout Arctic Inference reads (the
    reference drafts the same from the files), and load back unchanged."""
    model = _our_model(layout)
    save_speculator(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert (
        set(safetensors_torch.load_file(str(tmp_path / "model.safetensors"))) == SAVED_NAMES[layout]
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg.items() >= SAVED_CONFIG[layout].items(), cfg
    assert cfg["top_k_tokens_per_head"] == [1] * 3 and cfg["model_type"] == "mlp_speculator"
    assert cfg["base_model_archs"] == ["LlamaForCausalLM"]
    assert_same_as_reference(model, tmp_path)
    loaded = load_speculator(tmp_path)
    assert type(loaded) is type(model) and loaded.config.layout == model.config.layout
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_released_checkpoint_round_trips(tmp_path: Path) -> None:
    """ArcticTraining's output -> load -> save: the saved directory drafts
    like the original under the reference, and its config keeps the keys
    Arctic reads (and the unknown ones)."""
    config = _lstm_config(3, some_future_key={"a": 1})
    original = write(tmp_path / "original", config, lstm_tensors(3))
    save_speculator(load_speculator(original), tmp_path / "saved")
    h, last = inputs(batch=8, seed=9)
    assert reference(tmp_path / "saved", h, last)[0] == reference(original, h, last)[0]
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    for key in (
        "architectures",
        "method",
        "input_hidden_dim",
        "inner_dim",
        "proj_dim",
        "emb_dim",
        "n_predict",
        "vocab_size",
        "tie_weights",
        "tie_lstm_embs",
        "scale_input",
        "base_model_archs",
        "base_model_name_or_path",
        "some_future_key",
        "top_k_tokens_per_head",
    ):
        assert saved[key] == config[key], key


# ============================================================ refusals
def _lstm_ckpt(tmp_path: Path, edit: Callable[[dict], Any], config: dict | None = None) -> Path:
    tensors = {k: v.clone() for k, v in lstm_tensors(3).items()}
    edit(tensors)
    return write(tmp_path, config or _lstm_config(3), tensors, fmt="safetensors")


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda t: t.pop("cell_proj.1.weight"),
            r"gate projection 1 is incomplete: missing tensor\(s\) cell_proj.1.weight",
        ),
        (
            lambda t: t.update({"projs.0.weight": torch.zeros(4 * P, HIDDEN)}),
            r"both 'projs.0.weight' and the split gate projections",
        ),
        (
            lambda t: t.update({"input_proj.0.weight": torch.zeros(P + 1, HIDDEN)}),
            "the gate projections of projection 0 differ in shape",
        ),
        (
            lambda t: t["output_emb.0.weight"].add_(1.0),
            r"'output_emb.0.weight' differs from 'forget_emb.0.weight', but tie_lstm_embs is true",
        ),
        (
            lambda t: t["head.2.weight"].mul_(2.0),
            r"'head.2.weight' differs from 'head.0.weight', but tie_weights is true",
        ),
        (
            lambda t: t.update({"head.1.weight": torch.zeros(VOCAB, 3)}),
            r"'head.1.weight' \(tied to 'head.0.weight'\) has shape",
        ),
        (
            lambda t: [t.pop("forget_emb.0.weight"), t.pop("head.0.weight")],
            r"missing tensor\(s\) forget_emb.0.weight, head.0.weight",
        ),
        (
            lambda t: t.update({"mystery.weight": torch.zeros(3), "head.7.weight": torch.zeros(3)}),
            r"unexpected tensor\(s\) 'head.7.weight', 'mystery.weight'",
        ),
        (
            lambda t: t.update({"state_ln.0.bias": torch.zeros(P + 1)}),
            r"tensor 'state_ln.0.bias' has shape \(17,\), expected \(16,\)",
        ),
    ],
)
def test_bad_released_checkpoints_are_refused(tmp_path: Path, edit, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_speculator(_lstm_ckpt(tmp_path, edit))


def test_aliases_are_checked_only_when_tied(tmp_path: Path) -> None:
    """``tie_lstm_embs: false`` with one forget_emb only: the gate embeddings
    are missing, not silently shared."""
    tensors = {
        k: v
        for k, v in lstm_tensors(3).items()
        if not k.startswith(("input_emb", "output_emb", "cell_emb"))
    }
    ckpt = write(tmp_path, _lstm_config(3, tie_lstm_embs=False), tensors)
    with pytest.raises(
        ValueError,
        match=r"missing tensor\(s\) cell_emb.0.weight, input_emb.0.weight, output_emb.0.weight",
    ):
        load_speculator(ckpt)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(inner_dim=f"{P}.8"), r"inner_dim='16.8': a sum_lstm head is one layer"),
        (dict(proj_dim="8"), r"proj_dim='8': a sum_lstm head is one layer"),
        (dict(emb_dim=[]), "'emb_dim' is an empty list of widths"),
        (dict(emb_dim="16.x"), "'emb_dim' must be an integer or a dotted string"),
        (dict(method="mlp"), "unsupported method 'mlp' for ArcticLSTMSpeculatorPreTrainedModel"),
        (dict(base_model_archs=[1]), "'base_model_archs' must be a list of architecture names"),
        (
            dict(method="sum_rnn", proj_dim=f"{P}.8"),
            r"proj_dim '16.8': every stacked width must equal 16",
        ),
        (dict(method="sum_rnn", inner_dim=f"8.{P}"), r"emb_dim \(16\) must equal inner_dim \(8\)"),
        (
            dict(architectures=["ArcticMLPSpeculatorPreTrainedModel"], emb_dim=HIDDEN, inner_dim=P),
            "method 'sum_lstm' needs the ArcticLSTM layout",
        ),
    ],
)
def test_bad_released_configs_are_refused(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpeculatorConfig.from_dict(_lstm_config(3, **change))


def test_base_model_archs_spellings() -> None:
    assert SpeculatorConfig.from_dict(
        _lstm_config(3, base_model_archs="LlamaForCausalLM")
    ).base_model_archs == ("LlamaForCausalLM",)
    no_archs = _lstm_config(3)
    del no_archs["base_model_archs"]
    c = SpeculatorConfig.from_dict(no_archs)
    assert c.base_model_archs is None and "base_model_archs" not in c.to_dict()
