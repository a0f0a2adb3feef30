"""Model shapes served with random weights (config only: vLLM's
``load_format="dummy"``, so timing only) and the FLOPs a prompt token costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Llama-3.1-8B's shape (random weights: timing only)
SHAPES: dict[str, dict[str, Any]] = {
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=128256,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        torch_dtype="bfloat16",
    ),
}


def llama_config(name: str) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a Llama of shape ``name``."""
    return dict(SHAPES[name], architectures=["LlamaForCausalLM"], model_type="llama")


def swiftkv_config(name: str, num_key_value_layers: int) -> dict[str, Any]:
    """The ``config.json`` of the SwiftKV form of that Llama, in the released
    layout (``num_key_value_layers`` full layers, AcrossKV group size 1)."""
    return dict(
        llama_config(name),
        architectures=["LlamaSwiftKVForCausalLM"],
        model_type="llama_swiftkv",
        swiftkv=True,
        num_key_value_layers=num_key_value_layers,
        key_value_group_size=1,
    )


def _write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    return path


def write_llama_shape(name: str, out: Path) -> Path:
    """``out/<name>-llama``, a config-only Llama directory."""
    return _write_config(out / f"{name}-llama", llama_config(name))


def write_swiftkv_shape(name: str, out: Path, num_key_value_layers: int) -> Path:
    """``out/<name>-swiftkv-k<K>``, a config-only SwiftKV directory."""
    return _write_config(
        out / f"{name}-swiftkv-k{num_key_value_layers}",
        swiftkv_config(name, num_key_value_layers),
    )


def flops_per_prompt_token(
    cfg: dict[str, Any], k: int | None, prompt_len: int
) -> tuple[float, float]:
    """Multiply-adds per prompt token of the decoder, linear layers plus
    causal attention (QK^T and PV over ``prompt_len / 2`` keys on average),
    for all layers (``k`` None) or SwiftKV's first ``k`` layers plus the
    stacked K/V projection. The LM head runs for the last token only in both."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    d = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q = h * cfg["num_attention_heads"] * d
    kv = 2 * h * cfg["num_key_value_heads"] * d
    attention = 2 * (prompt_len / 2) * cfg["num_attention_heads"] * d
    layer = 2 * q + kv + 3 * h * inter + attention  # q, o, k+v, gate/up/down, attention
    if k is None:
        return layers * layer, 0.0
    return layers * layer, k * layer + (layers - k) * kv
