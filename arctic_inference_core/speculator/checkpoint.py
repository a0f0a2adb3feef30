"""Load and save speculators as Hugging Face style directories.

A checkpoint directory holds ``config.json`` (see
:class:`~arctic_inference_core.speculator.config.SpeculatorConfig`) and the
weights: ``model.safetensors``, sharded ``model.safetensors.index.json`` +
shards, ``pytorch_model.bin`` (what ArcticTraining writes) or sharded
``pytorch_model.bin.index.json`` + shards.

Tensor names are those of the released checkpoints (docs/speculator.md,
"Checkpoint format"); :func:`load_speculator` maps them onto the modules'
``state_dict`` and :func:`save_speculator` writes them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from arctic_inference_core.speculator.config import SpeculatorConfig
from arctic_inference_core.speculator.modules import LSTMSpeculator, MLPSpeculator, SpeculatorBase

__all__ = ["build_speculator", "load_speculator", "save_speculator", "WEIGHTS_NAME"]

WEIGHTS_NAME = "model.safetensors"
_INDEX_NAME = "model.safetensors.index.json"
_BIN_NAME = "pytorch_model.bin"
_BIN_INDEX_NAME = "pytorch_model.bin.index.json"
_PREFIX = "speculator."

# sum_rnn checkpoints wrap each single-layer module in nn.Sequential
_SEQ_RE = re.compile(r"^(emb|proj|ln)\.(\d+)\.0\.(weight|bias)$")
_IDX_RE = re.compile(r"^([A-Za-z_]+)\.(\d+)\.(.+)$")
# sum_lstm checkpoints store the four gate projections apart; the modules
# hold them concatenated in this order (the gate order of the recurrence)
_GATES = ("forget", "input", "output", "cell")
_SPLIT_PROJ_RE = re.compile(r"^(forget|input|output|cell)_proj\.(\d+)\.weight$")
# with tie_lstm_embs, ArcticTraining's state dict repeats forget_emb under these names
_EMB_ALIAS_RE = re.compile(r"^(input|output|cell)_emb\.(\d+)\.weight$")


def build_speculator(config: SpeculatorConfig) -> SpeculatorBase:
    """Create a randomly initialised speculator for ``config``."""
    if config.method == "mlp":
        return MLPSpeculator(config)
    if config.method == "sum_lstm":
        return LSTMSpeculator(config)
    raise ValueError(f"speculator config: unknown method {config.method!r}")


def _torch_load(path: str) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle and zip errors vary
        raise ValueError(f"speculator checkpoint: cannot read {path!r}: {e}") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"speculator checkpoint: {path!r} does not hold a state dict of tensors")
    return dict(sd)


def _shards(path: str, index_name: str) -> list[str]:
    index = os.path.join(path, index_name)
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"speculator checkpoint: cannot read {index!r}: {e}") from None
    files = [os.path.join(path, s) for s in sorted(set(weight_map.values()))]
    for s in files:
        if not os.path.isfile(s):
            raise ValueError(
                f"speculator checkpoint: shard {s!r} listed in {index_name} is missing"
            )
    return files


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    """All tensors of the directory's weights, by their stored names."""
    from safetensors.torch import load_file

    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    tensors: dict[str, torch.Tensor] = {}
    if has(WEIGHTS_NAME) or has(_INDEX_NAME):
        files = (
            [os.path.join(path, WEIGHTS_NAME)] if has(WEIGHTS_NAME) else _shards(path, _INDEX_NAME)
        )
        for fpath in files:
            try:
                part = load_file(fpath, device="cpu")
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"speculator checkpoint: cannot read {fpath!r}: {e}") from None
            _merge(tensors, part, fpath)
        return tensors
    if has(_BIN_NAME) or has(_BIN_INDEX_NAME):
        files = (
            [os.path.join(path, _BIN_NAME)] if has(_BIN_NAME) else _shards(path, _BIN_INDEX_NAME)
        )
        for fpath in files:
            _merge(tensors, _torch_load(fpath), fpath)
        return tensors
    raise ValueError(
        f"speculator checkpoint: no weights in {path!r} (expected {WEIGHTS_NAME}, {_INDEX_NAME}, "
        f"{_BIN_NAME} or {_BIN_INDEX_NAME})"
    )


def _merge(into: dict[str, torch.Tensor], part: Mapping[str, torch.Tensor], fpath: str) -> None:
    for k, v in part.items():
        if k in into:
            raise ValueError(
                f"speculator checkpoint: tensor {k!r} appears twice (again in {fpath!r})"
            )
        into[k] = v


def _strip_prefix(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the optional ``speculator.`` prefix (checkpoints saved from the
    base model with the speculator attached)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        key = name[len(_PREFIX) :] if name.startswith(_PREFIX) else name
        if key in out:
            raise ValueError(f"speculator checkpoint: tensor {key!r} appears twice (as {name!r})")
        out[key] = t
    return out


def _fuse_gate_projections(tensors: dict[str, torch.Tensor]) -> None:
    """``{forget,input,output,cell}_proj.{j}.weight`` [p, in] -> ``projs.{j}.weight``
    [4p, in], concatenated in that order (what Arctic Inference's loader does)."""
    parts: dict[int, dict[str, str]] = {}
    for name in tensors:
        m = _SPLIT_PROJ_RE.match(name)
        if m:
            parts.setdefault(int(m.group(2)), {})[m.group(1)] = name
    for j, found in sorted(parts.items()):
        missing = [f"{g}_proj.{j}.weight" for g in _GATES if g not in found]
        if missing:
            raise ValueError(
                f"speculator checkpoint: gate projection {j} is incomplete: missing tensor(s) "
                f"{', '.join(missing)} (a sum_lstm checkpoint stores forget_proj, input_proj, "
                "output_proj and cell_proj for each projection)"
            )
        fused = f"projs.{j}.weight"
        if fused in tensors:
            raise ValueError(
                f"speculator checkpoint: both {fused!r} and the split gate projections "
                f"{', '.join(found[g] for g in _GATES)} are present"
            )
        gates = [tensors.pop(found[g]) for g in _GATES]
        shapes = {tuple(t.shape) for t in gates}
        dtypes = {t.dtype for t in gates}
        if len(shapes) != 1 or len(dtypes) != 1 or gates[0].dim() != 2:
            raise ValueError(
                f"speculator checkpoint: the gate projections of projection {j} differ in shape "
                f"or dtype: "
                + ", ".join(f"{found[g]} {tuple(t.shape)} {t.dtype}" for g, t in zip(_GATES, gates))
            )
        tensors[fused] = torch.cat(gates, dim=0)


def _split_gate_projections(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`_fuse_gate_projections` (for saving)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        m = re.match(r"^projs\.(\d+)\.weight$", name)
        if m is None:
            out[name] = t
            continue
        for gate, chunk in zip(_GATES, t.chunk(4, dim=0)):
            out[f"{gate}_proj.{m.group(1)}.weight"] = chunk.contiguous()
    return out


def _check_copy(name: str, t: torch.Tensor, canon: str, original: torch.Tensor, why: str) -> None:
    """A tied copy must be the tensor it repeats."""
    if tuple(t.shape) != tuple(original.shape):
        raise ValueError(
            f"speculator checkpoint: tensor {name!r} (tied to {canon!r}) has shape "
            f"{tuple(t.shape)}, expected {tuple(original.shape)}"
        )
    if t.dtype != original.dtype or not torch.equal(t, original):
        raise ValueError(
            f"speculator checkpoint: tensor {name!r} differs from {canon!r}, but {why}; the "
            "checkpoint does not match its config.json"
        )


def _drop_tied_copies(
    config: SpeculatorConfig, expected: Mapping[str, torch.Tensor], tensors: dict[str, torch.Tensor]
) -> None:
    """Remove tensors that repeat a tied one (checked equal to it):
    ``input_emb``/``output_emb``/``cell_emb`` with ``tie_lstm_embs`` (aliases
    of ``forget_emb``), and per-head copies of tied modules (``head.1`` ...
    ``head.{n_predict-1}`` with ``tie_weights``, ``proj.2`` ... for fms-extras)."""
    if config.method == "sum_lstm" and config.tie_lstm_embs:
        for name in list(tensors):
            alias = _EMB_ALIAS_RE.match(name)
            canon = "" if alias is None else f"forget_emb.{alias.group(2)}.weight"
            if canon in tensors:
                _check_copy(
                    name,
                    tensors[name],
                    canon,
                    tensors[canon],
                    "tie_lstm_embs is true (one forget_emb serves all four gates)",
                )
                del tensors[name]
    for name in [n for n in tensors if n not in expected]:
        m = _IDX_RE.match(name)
        if not m or int(m.group(2)) >= config.n_predict:
            continue
        for j in range(int(m.group(2)) - 1, -1, -1):  # the copy head i uses: last one below
            canon = f"{m.group(1)}.{j}.{m.group(3)}"
            if canon in expected:
                if canon in tensors:
                    _check_copy(
                        name,
                        tensors[name],
                        canon,
                        tensors[canon],
                        "tie_weights is true (the heads share one module)",
                    )
                    del tensors[name]
                break


def _canonical_state(
    model: SpeculatorBase, tensors: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map a checkpoint's tensors (any released layout) onto ``model``'s
    ``state_dict`` names; check names, shapes and dtypes.

    Raises:
        ValueError: naming every missing and every unexpected tensor, or the
            first bad shape/dtype or tied copy that differs.
    """
    config = model.config
    expected = model.state_dict()
    out = _strip_prefix(tensors)
    if not config.stacked:
        for name in list(out):
            m = _SEQ_RE.match(name)
            if m:
                plain = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
                if plain in out:
                    raise ValueError(
                        f"speculator checkpoint: both {name!r} and {plain!r} are present"
                    )
                out[plain] = out.pop(name)
    if config.method == "sum_lstm":
        _fuse_gate_projections(out)
    _drop_tied_copies(config, expected, out)

    what = (
        f"layout {config.layout}, n_predict={config.n_predict}, tie_weights={config.tie_weights}"
        + (f", tie_lstm_embs={config.tie_lstm_embs}" if config.method == "sum_lstm" else "")
    )
    missing = sorted(k for k in expected if k not in out)
    unexpected = sorted(k for k in out if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing tensor(s) {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {', '.join(repr(k) for k in unexpected)}")
    if problems:
        raise ValueError(f"speculator checkpoint: {'; '.join(problems)} ({what})")
    for name, t in out.items():
        want = tuple(expected[name].shape)
        if tuple(t.shape) != want:
            raise ValueError(
                f"speculator checkpoint: tensor {name!r} has shape {tuple(t.shape)}, expected {want}"
            )
        if t.is_complex() or not t.is_floating_point():
            raise ValueError(
                f"speculator checkpoint: tensor {name!r} has non-float dtype {t.dtype}"
            )
    return out


def _released_state_dict(model: SpeculatorBase) -> dict[str, torch.Tensor]:
    """``model``'s weights under the released checkpoint names of its
    :attr:`~SpeculatorConfig.layout` (what :func:`save_speculator` writes):
    split gate projections for ``sum_lstm``, ``nn.Sequential`` names for
    ``sum_rnn``; tied modules once, without the per-head copies."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    layout = model.config.layout
    if layout == "sum_lstm":
        return _split_gate_projections(state)
    if layout == "sum_rnn" and not model.config.stacked:
        return {(re.sub(r"^(emb|proj|ln)\.(\d+)\.", r"\1.\2.0.", k)): v for k, v in state.items()}
    return state


def load_speculator(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> SpeculatorBase:
    """Load a speculator checkpoint directory.

    Reads every released layout (docs/speculator.md, "Checkpoint format"):
    an optional ``speculator.`` name prefix; ``sum_lstm`` gate projections
    stored apart (``{forget,input,output,cell}_proj.{j}``, concatenated in
    that order); ``input_emb``/``output_emb``/``cell_emb`` repeating
    ``forget_emb`` with ``tie_lstm_embs``, and per-head copies of tied
    modules (each checked equal to the tensor it repeats, then dropped);
    ``nn.Sequential`` names of ``sum_rnn`` heads.

    Args:
        path: directory with ``config.json`` and the weights
            (``model.safetensors``, ``pytorch_model.bin`` or sharded).
        dtype: parameter dtype; default: the dtype stored in the checkpoint.
        device: where to put the parameters.

    Returns:
        an :class:`MLPSpeculator` or :class:`LSTMSpeculator` in eval mode.

    Raises:
        ValueError: missing/invalid config key, missing or unexpected tensors
            (all named), a tied copy that differs from its original, wrong
            tensor shape, unreadable files (message names the problem).
    """
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise ValueError(f"speculator checkpoint: {p!r} is not a directory")
    config = SpeculatorConfig.from_pretrained(p)
    tensors = _read_tensors(p)
    with torch.device("meta"):
        skeleton = build_speculator(config)
    state = _canonical_state(skeleton, tensors)
    if dtype is None:
        dtype = next(iter(state.values())).dtype
    model = build_speculator(config)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def save_speculator(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``config.json`` and ``model.safetensors`` into directory ``path``,
    in the released layout of ``model.config.layout`` (the one Arctic
    Inference's ``arctic`` method loads): ``sum_lstm`` gate projections split
    into ``{forget,input,output,cell}_proj.{j}``, ``sum_rnn`` heads under
    ``nn.Sequential`` names, tied modules once. The result loads back with
    :func:`load_speculator` to identical outputs.

    Raises:
        TypeError: if ``model`` is not an MLPSpeculator/LSTMSpeculator.
    """
    from safetensors.torch import save_file

    if not isinstance(model, SpeculatorBase):
        raise TypeError(
            f"save_speculator: expected MLPSpeculator or LSTMSpeculator, got {type(model).__name__}"
        )
    os.makedirs(path, exist_ok=True)
    state = _released_state_dict(model)
    config = dataclasses.replace(model.config, extra=dict(model.config.extra))
    dtypes = {v.dtype for v in state.values()}
    dtype_names = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
    if len(dtypes) == 1 and next(iter(dtypes)) in dtype_names:
        config.extra["torch_dtype"] = dtype_names[next(iter(dtypes))]
    save_file(state, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
    config.save_pretrained(path)
