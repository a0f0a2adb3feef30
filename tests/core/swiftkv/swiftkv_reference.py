"""The released SwiftKV checkpoint layout (ArcticTraining's ``LlamaSwiftKV``),
written and read here without the project's code: tiny checkpoints with
independent random tensors under the released names, and a plain-PyTorch
reading of them (the oracle of the core's Hugging Face model and of the vLLM
model; tests/vllm/e2e/test_swiftkv_model.py imports it too).

Layout facts pinned here: config ``model_type "llama_swiftkv"``,
``architectures ["LlamaSwiftKVForCausalLM"]``, ``swiftkv``,
``num_key_value_layers``, ``key_value_group_size``, untied ``lm_head``; every
layer keeps ``self_attn.{q,k,v,o}_proj``; layers ``i >= n`` add
``q_proj_swiftkv``, the first of each group of ``g`` adds
``k_proj_swiftkv``/``v_proj_swiftkv``; ``model.norm_swiftkv``. K/V of a later
layer: its group's ``k/v_proj_swiftkv`` of ``norm_swiftkv(hidden state
entering layer n)``, RoPE applied in the layer; queries from
``q_proj_swiftkv``. ``swiftkv: false``: the plain Llama."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY = dict(
    vocab_size=259,  # the byte tokenizer of arctic_inference_vllm.testing
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
)


def released_names(cfg: dict) -> list[str]:
    """Every tensor name of a released checkpoint of ``cfg`` (no biases)."""
    n_layers, n, g = (
        cfg["num_hidden_layers"],
        cfg["num_key_value_layers"],
        cfg["key_value_group_size"],
    )
    names = ["model.embed_tokens.weight", "model.norm.weight", "model.norm_swiftkv.weight"]
    names.append("lm_head.weight")
    for i in range(n_layers):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        names += [p + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")]
        names += [p + f"self_attn.{m}_proj.weight" for m in "qkvo"]
        if i >= n:
            names.append(p + "self_attn.q_proj_swiftkv.weight")
            if (i - n) % g == 0:
                names += [
                    p + "self_attn.k_proj_swiftkv.weight",
                    p + "self_attn.v_proj_swiftkv.weight",
                ]
    return names


def _shape(cfg: dict, name: str) -> tuple[int, ...]:
    h, d = cfg["hidden_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    last = name.rsplit(".", 2)[-2]
    return {
        "embed_tokens": (cfg["vocab_size"], h),
        "lm_head": (cfg["vocab_size"], h),
        "q_proj": (q, h),
        "q_proj_swiftkv": (q, h),
        "k_proj": (kv, h),
        "v_proj": (kv, h),
        "k_proj_swiftkv": (kv, h),
        "v_proj_swiftkv": (kv, h),
        "o_proj": (h, q),
        "gate_proj": (cfg["intermediate_size"], h),
        "up_proj": (cfg["intermediate_size"], h),
        "down_proj": (h, cfg["intermediate_size"]),
    }.get(last, (h,))


def write_checkpoint(
    path: Path,
    num_key_value_layers: int,
    key_value_group_size: int,
    swiftkv: bool = True,
    seed: int = 0,
) -> Path:
    """A tiny released-layout checkpoint in ``path`` (config.json,
    model.safetensors in float32, the byte tokenizer). Every tensor, the
    SwiftKV ones included, is drawn independently."""
    from safetensors.torch import save_file

    from arctic_inference_vllm.testing import save_byte_tokenizer

    assert save_byte_tokenizer(path) == TINY["vocab_size"]
    cfg = dict(
        TINY,
        model_type="llama_swiftkv",
        architectures=["LlamaSwiftKVForCausalLM"],
        swiftkv=swiftkv,
        num_key_value_layers=num_key_value_layers,
        key_value_group_size=key_value_group_size,
        tie_word_embeddings=False,
        hidden_act="silu",
        torch_dtype="float32",
    )
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in released_names(cfg):
        shape = _shape(cfg, name)
        if len(shape) == 1:  # norms near 1
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            t = torch.randn(shape, generator=gen) / shape[1] ** 0.5
        if name == "lm_head.weight":
            t = t * 8.0  # larger logits: fewer near-ties
        if name == "model.embed_tokens.weight":
            t = t * shape[1] ** 0.5 * 0.5
        tensors[name] = t.contiguous()
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    return path


def set_swiftkv(path: Path, swiftkv: bool) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg["swiftkv"] = swiftkv
    (path / "config.json").write_text(json.dumps(cfg, indent=1))


# --------------------------------------------------------------------------- the reading


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x [T, H, D] at positions 0..T-1 (rotate-half convention)."""
    t, _, d = x.shape
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(t, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos()[:, None], torch.cat([ang, ang], -1).sin()[:, None]
    rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention; q [T, Hq, D], k/v [T, Hkv, D] -> [T, Hq * D]."""
    t, hq, d = q.shape
    rep = hq // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / d**0.5
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(t, hq * d)


def reference_logits(path: Path, ids: list[int], swiftkv: bool | None = None) -> torch.Tensor:
    """Logits ``[len(ids), vocab]`` (float64) of the checkpoint in ``path``,
    read by the released names; ``swiftkv`` None: as its config says."""
    from safetensors.torch import load_file

    cfg = json.loads((path / "config.json").read_text())
    w = {k: v.double() for k, v in load_file(str(path / "model.safetensors")).items()}
    on = cfg["swiftkv"] if swiftkv is None else swiftkv
    n, g, eps = cfg["num_key_value_layers"], cfg["key_value_group_size"], cfg["rms_norm_eps"]
    d, theta = cfg["head_dim"], cfg.get("rope_theta", 10000.0)

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, d)

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    swiftkv_in = None
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if on and i == n:
            swiftkv_in = _rms(x, w["model.norm_swiftkv.weight"], eps)
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        if on and i >= n:
            src = f"model.layers.{n + (i - n) // g * g}.self_attn."
            q = h @ w[p + "self_attn.q_proj_swiftkv.weight"].T
            k = swiftkv_in @ w[src + "k_proj_swiftkv.weight"].T
            v = swiftkv_in @ w[src + "v_proj_swiftkv.weight"].T
        else:
            q, k, v = (h @ w[p + f"self_attn.{m}_proj.weight"].T for m in "qkv")
        a = _attention(_rope(heads(q), theta), _rope(heads(k), theta), heads(v))
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    return _rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


def reference_greedy(path: Path, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation (full recompute per token)."""
    out = list(ids)
    for _ in range(new_tokens):
        out.append(int(reference_logits(path, out)[-1].argmax()))
    return out[len(ids) :]
