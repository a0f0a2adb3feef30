"""Load and save speculators as Hugging Face style directories.

A checkpoint directory holds ``config.json`` (see
:class:`~arctic_inference_core.speculator.config.SpeculatorConfig`) and the
weights as ``model.safetensors`` (or sharded ``model.safetensors.index.json``
+ shards; ``pytorch_model.bin`` is read as a fallback).
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

# ArcticTraining "sum_rnn" checkpoints wrap each module in nn.Sequential
_SEQ_RE = re.compile(r"^(emb|proj|ln)\.(\d+)\.0\.(weight|bias)$")
_IDX_RE = re.compile(r"^([A-Za-z_]+)\.(\d+)\.(.+)$")


def build_speculator(config: SpeculatorConfig) -> SpeculatorBase:
    """Create a randomly initialised speculator for ``config``."""
    if config.method == "mlp":
        return MLPSpeculator(config)
    if config.method == "sum_lstm":
        return LSTMSpeculator(config)
    raise ValueError(f"speculator config: unknown method {config.method!r}")


def _read_tensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = os.path.join(path, WEIGHTS_NAME)
    index = os.path.join(path, _INDEX_NAME)
    binary = os.path.join(path, _BIN_NAME)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        files = [os.path.join(path, s) for s in sorted(set(weight_map.values()))]
        for s in files:
            if not os.path.isfile(s):
                raise ValueError(
                    f"speculator checkpoint: shard {s!r} listed in {_INDEX_NAME} is missing"
                )
    elif os.path.isfile(binary):
        sd = torch.load(binary, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict):
            raise ValueError(f"speculator checkpoint: {binary!r} does not hold a state dict")
        return dict(sd)
    else:
        raise ValueError(
            f"speculator checkpoint: no weights in {path!r} (expected {WEIGHTS_NAME}, {_INDEX_NAME} or {_BIN_NAME})"
        )
    tensors: dict[str, torch.Tensor] = {}
    for fpath in files:
        try:
            tensors.update(load_file(fpath, device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"speculator checkpoint: cannot read {fpath!r}: {e}") from None
    return tensors


def _normalise_names(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        key = name[len("speculator.") :] if name.startswith("speculator.") else name
        m = _SEQ_RE.match(key)
        if m:
            key = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        if key in out:
            raise ValueError(f"speculator checkpoint: tensor {key!r} appears twice (as {name!r})")
        out[key] = t
    return out


def _match_state_dict(
    model: SpeculatorBase, tensors: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Check names/shapes against the model; return the state dict to load.

    Tied modules are stored once (index 0, or 0 and 1 for the input
    projections); checkpoints that repeat a tied tensor for every head
    (``emb.1.weight`` ... up to ``n_predict - 1``) are accepted when the shape
    matches, and the duplicates are ignored.
    """
    expected = {k: v for k, v in model.state_dict().items()}
    n_predict = model.n_predict
    missing = sorted(k for k in expected if k not in tensors)
    if missing:
        raise ValueError(
            f"speculator checkpoint: missing tensor(s) {', '.join(missing)} "
            f"(method={model.config.method}, tie_weights={model.config.tie_weights})"
        )
    result: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name in expected:
            want = tuple(expected[name].shape)
            if tuple(t.shape) != want:
                raise ValueError(
                    f"speculator checkpoint: tensor {name!r} has shape {tuple(t.shape)}, expected {want}"
                )
            if t.is_complex() or not (t.is_floating_point()):
                raise ValueError(
                    f"speculator checkpoint: tensor {name!r} has non-float dtype {t.dtype}"
                )
            result[name] = t
            continue
        m = _IDX_RE.match(name)
        if m and int(m.group(2)) < n_predict:
            canon = None
            # the tied copy that head j uses: last existing index
            for j in range(int(m.group(2)), -1, -1):
                cand = f"{m.group(1)}.{j}.{m.group(3)}"
                if cand in expected:
                    canon = cand
                    break
            if canon is not None:
                if tuple(t.shape) != tuple(expected[canon].shape):
                    raise ValueError(
                        f"speculator checkpoint: tensor {name!r} (tied to {canon!r}) has shape "
                        f"{tuple(t.shape)}, expected {tuple(expected[canon].shape)}"
                    )
                continue
        raise ValueError(
            f"speculator checkpoint: unexpected tensor {name!r} "
            f"(method={model.config.method}, tie_weights={model.config.tie_weights}, "
            f"tie_lstm_embs={model.config.tie_lstm_embs})"
        )
    return result


def load_speculator(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> SpeculatorBase:
    """Load a speculator checkpoint directory.

    Args:
        path: directory with ``config.json`` and ``model.safetensors``.
        dtype: parameter dtype; default: the dtype stored in the checkpoint.
        device: where to put the parameters.

    Returns:
        an :class:`MLPSpeculator` or :class:`LSTMSpeculator` in eval mode.

    Raises:
        ValueError: missing/invalid config key, missing or unexpected tensor,
            wrong tensor shape, unreadable files (message names the problem).
    """
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise ValueError(f"speculator checkpoint: {p!r} is not a directory")
    config = SpeculatorConfig.from_pretrained(p)
    tensors = _normalise_names(_read_tensors(p))
    with torch.device("meta"):
        skeleton = build_speculator(config)
    state = _match_state_dict(skeleton, tensors)
    if dtype is None:
        dtype = next(iter(state.values())).dtype
    model = build_speculator(config)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def save_speculator(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``config.json`` and ``model.safetensors`` into directory ``path``.

    Tied modules are written once (see :func:`load_speculator`); the result
    loads back with :func:`load_speculator` to identical outputs.

    Raises:
        TypeError: if ``model`` is not an MLPSpeculator/LSTMSpeculator.
    """
    from safetensors.torch import save_file

    if not isinstance(model, SpeculatorBase):
        raise TypeError(
            f"save_speculator: expected MLPSpeculator or LSTMSpeculator, got {type(model).__name__}"
        )
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = dataclasses.replace(model.config, extra=dict(model.config.extra))
    dtypes = {v.dtype for v in state.values()}
    dtype_names = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
    if len(dtypes) == 1 and next(iter(dtypes)) in dtype_names:
        config.extra["torch_dtype"] = dtype_names[next(iter(dtypes))]
    save_file(state, os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
    config.save_pretrained(path)
