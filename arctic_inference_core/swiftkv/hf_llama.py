"""SwiftKV Llama for Hugging Face ``transformers``, in the released layout
(ArcticTraining's ``LlamaSwiftKV``; CPU-friendly reference, no KV cache).

Importing this module registers ``model_type="llama_swiftkv"`` with
``AutoConfig`` and ``AutoModelForCausalLM``.

Checkpoint layout (``N = num_hidden_layers``, ``n = num_key_value_layers``,
``g = key_value_group_size``; docs/swiftkv.md):

- config: ``model_type: "llama_swiftkv"``, ``architectures:
  ["LlamaSwiftKVForCausalLM"]``, ``swiftkv``, ``num_key_value_layers``,
  ``key_value_group_size``;
- every layer keeps the Llama's ``self_attn.{q,k,v,o}_proj``;
- layers ``i >= n`` add ``self_attn.q_proj_swiftkv``; the first layer of each
  group of ``g`` (``(i - n) % g == 0``) adds ``self_attn.k_proj_swiftkv`` and
  ``self_attn.v_proj_swiftkv``;
- ``model.norm_swiftkv``.

With ``swiftkv: true``, the hidden state entering layer ``n`` goes through
``norm_swiftkv`` and each group's ``k/v_proj_swiftkv``; a later layer attends
with ``q_proj_swiftkv`` of its own input over its group's K/V (RoPE applied
in each layer, as to any key) and keeps its ``o_proj``, norms and MLP. Its
original ``q/k/v_proj`` are unused. With ``swiftkv: false`` the model is the
original Llama (every layer with its original projections).

``forward(input_ids, logits_to_keep=k)`` with ``k > 0`` and SwiftKV on is the
prefill shortcut: every token runs the first ``n`` layers and the K/V
projections, only the last ``k`` tokens run the later layers. With ``k == 0``
all tokens run all layers (training/distillation form). Both give the same
logits for the last ``k`` tokens (tested).

Loading is strict: a checkpoint with a missing or an unexpected weight is a
``ValueError`` naming it.

Limitations: no KV cache / ``generate`` incremental decoding, no padding
``attention_mask`` (batches of equal length only).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding

from arctic_inference_core._validate import check_int
from arctic_inference_core.swiftkv.layout import SwiftKVLayout
from arctic_inference_core.swiftkv.ops import apply_rope

__all__ = ["LlamaSwiftKVConfig", "LlamaSwiftKVForCausalLM", "LlamaSwiftKVModel"]

_Config = TypeVar("_Config", bound=type)


def _strict_if_available(cls: _Config) -> _Config:
    """transformers >= 5: configs are ``huggingface_hub`` @strict dataclasses."""
    try:
        from huggingface_hub.dataclasses import strict
    except ImportError:  # pragma: no cover
        return cls
    return cast(_Config, strict(cls))  # strict(cls) returns cls, made strict


@_strict_if_available
class LlamaSwiftKVConfig(LlamaConfig):
    """:class:`~transformers.LlamaConfig` plus the released SwiftKV fields:
    ``swiftkv`` (use the SwiftKV path; default false, the original model),
    ``num_key_value_layers`` (layers with their own K/V; unset or 0: all
    layers) and ``key_value_group_size`` (later layers sharing one K/V;
    unset or 0: 1). The group size must divide the number of later layers."""

    model_type = "llama_swiftkv"

    swiftkv: bool = False
    num_key_value_layers: int | None = None
    key_value_group_size: int | None = None

    def __post_init__(self, **kwargs: object) -> None:
        super().__post_init__(**kwargs)
        n_layers = self.num_hidden_layers
        if not self.num_key_value_layers:
            self.num_key_value_layers = n_layers
        if not self.key_value_group_size:
            self.key_value_group_size = 1
        n = check_int("num_key_value_layers", self.num_key_value_layers, 1, n_layers)
        g = check_int("key_value_group_size", self.key_value_group_size, 1)
        if (n_layers - n) % g:
            raise ValueError(
                f"key_value_group_size ({g}) must divide the number of later layers "
                f"({n_layers - n} = num_hidden_layers {n_layers} - num_key_value_layers {n})"
            )
        if self.swiftkv:
            self.swiftkv_layout()  # validate

    def swiftkv_layout(self) -> SwiftKVLayout:
        """The validated :class:`SwiftKVLayout` of this config (needs at least
        one later layer: ``num_key_value_layers < num_hidden_layers``)."""
        assert self.num_key_value_layers is not None and self.key_value_group_size is not None
        return SwiftKVLayout(
            num_hidden_layers=self.num_hidden_layers,
            num_key_value_layers=self.num_key_value_layers,
            key_value_group_size=self.key_value_group_size,
            num_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            hidden_size=self.hidden_size,
        )

    def has_kv_swiftkv(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` holds ``k/v_proj_swiftkv`` (the first
        later layer of its group)."""
        n, g = self.num_key_value_layers, self.key_value_group_size
        assert n is not None and g is not None
        return layer_idx >= n and (layer_idx - n) % g == 0

    def kv_source_layer(self, layer_idx: int) -> int:
        """The layer whose ``k/v_proj_swiftkv`` gives later layer ``layer_idx``
        its K/V."""
        n, g = self.num_key_value_layers, self.key_value_group_size
        assert n is not None and g is not None
        if layer_idx < n:
            raise ValueError(f"layer {layer_idx} is not a later layer (num_key_value_layers={n})")
        return n + (layer_idx - n) // g * g


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal GQA attention. q ``[B, Tq, Hq, D]`` are the *last* Tq of the Tk
    positions; k/v ``[B, Tk, Hkv, D]``. Returns ``[B, Tq, Hq * D]``."""
    b, tq, hq, d = q.shape
    tk, hkv = k.shape[1], k.shape[2]
    rep = hq // hkv
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    q_pos = torch.arange(tk - tq, tk, device=q.device)[:, None]
    mask = torch.arange(tk, device=q.device)[None, :] <= q_pos  # [Tq, Tk]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(b, tq, hq * d)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on ``x`` ``[B, T, H, D]`` with ``cos``/``sin`` ``[B, T, D]``."""
    b, t, h, d = x.shape
    return apply_rope(x.reshape(b * t, h, d), cos.reshape(b * t, -1), sin.reshape(b * t, -1)).view(
        b, t, h, d
    )


def _linear(config: LlamaSwiftKVConfig, rows: int) -> nn.Linear:
    return nn.Linear(config.hidden_size, rows, bias=config.attention_bias)


class LlamaSwiftKVAttention(nn.Module):
    """Llama attention; later layers add ``q_proj_swiftkv`` and, on the first
    layer of a group, ``k/v_proj_swiftkv``."""

    def __init__(self, config: LlamaSwiftKVConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        num_kv_heads = config.num_key_value_heads
        if num_kv_heads is None:  # LlamaConfig fills it in the same way; its type allows None
            num_kv_heads = config.num_attention_heads
        self.num_kv_heads: int = num_kv_heads
        head_dim = config.head_dim
        if head_dim is None:  # LlamaConfig fills it in the same way; its type allows None
            head_dim = config.hidden_size // config.num_attention_heads
        self.head_dim: int = head_dim
        self.scaling = self.head_dim**-0.5
        q_rows, kv_rows = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = _linear(config, q_rows)
        self.k_proj = _linear(config, kv_rows)
        self.v_proj = _linear(config, kv_rows)
        self.o_proj = nn.Linear(q_rows, config.hidden_size, bias=config.attention_bias)
        assert config.num_key_value_layers is not None
        if layer_idx >= config.num_key_value_layers:
            self.q_proj_swiftkv = _linear(config, q_rows)
        if config.has_kv_swiftkv(layer_idx):
            self.k_proj_swiftkv = _linear(config, kv_rows)
            self.v_proj_swiftkv = _linear(config, kv_rows)

    def forward(
        self,
        x: torch.Tensor,
        cos_q: torch.Tensor,
        sin_q: torch.Tensor,
        cos_k: torch.Tensor,
        sin_k: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x`` ``[B, Tq, hidden]``; ``cos_q/sin_q`` ``[B, Tq, D]`` of the query
        positions, ``cos_k/sin_k`` ``[B, Tk, D]`` of the key positions. ``kv``
        (SwiftKV path): the group's K/V projections ``[B, Tk, Hkv * D]``, before
        RoPE; without it the layer's own ``k/v_proj`` of ``x`` (then Tk == Tq)."""
        b, tq, _ = x.shape
        if kv is None:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q, (k, v) = self.q_proj_swiftkv(x), kv
        tk = k.shape[1]
        q = _rope(q.view(b, tq, self.num_heads, self.head_dim), cos_q, sin_q)
        k = _rope(k.view(b, tk, self.num_kv_heads, self.head_dim), cos_k, sin_k)
        v = v.view(b, tk, self.num_kv_heads, self.head_dim)
        out: torch.Tensor = self.o_proj(_attend(q, k, v, self.scaling))
        return out


class LlamaSwiftKVDecoderLayer(nn.Module):
    def __init__(self, config: LlamaSwiftKVConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaSwiftKVAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        rope_q: tuple[torch.Tensor, torch.Tensor],
        rope_k: tuple[torch.Tensor, torch.Tensor],
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), *rope_q, *rope_k, kv)
        out: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return out


class LlamaSwiftKVPreTrainedModel(PreTrainedModel):
    config_class = LlamaSwiftKVConfig
    config: LlamaSwiftKVConfig
    base_model_prefix = "model"
    _no_split_modules = ["LlamaSwiftKVDecoderLayer"]

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, strict: a missing or an
        unexpected weight is a ``ValueError`` that names it (transformers
        would only warn and initialize the missing ones at random)."""
        want_info = kwargs.pop("output_loading_info", False)
        # transformers types the return as the model alone; with output_loading_info it is a pair
        loaded: Any = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        model, info = loaded
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        if missing or unexpected:
            raise ValueError(
                f"{args[0] if args else kwargs.get('pretrained_model_name_or_path')} is not a "
                f"LlamaSwiftKV checkpoint of this config: missing weights {missing}, unexpected "
                f"weights {unexpected} (num_key_value_layers="
                f"{model.config.num_key_value_layers}, key_value_group_size="
                f"{model.config.key_value_group_size}; docs/swiftkv.md lists the layout)"
            )
        return (model, info) if want_info else model


class LlamaSwiftKVModel(LlamaSwiftKVPreTrainedModel):
    """Decoder stack; returns the final-normed hidden states of the kept tokens."""

    def __init__(self, config: LlamaSwiftKVConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            LlamaSwiftKVDecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_swiftkv = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        num_query_tokens: int = 0,
    ) -> torch.Tensor:
        """``input_ids`` ``[B, T]``. With SwiftKV on and ``num_query_tokens`` > 0,
        only the last that many tokens run the later layers (and are returned);
        otherwise every token runs every layer."""
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}"
            )
        b, t = input_ids.shape
        if not 0 <= num_query_tokens <= t:
            raise ValueError(f"num_query_tokens must be in [0, {t}], got {num_query_tokens}")
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device)[None].expand(b, t)
        x = self.embed_tokens(input_ids)
        rope = self.rotary_emb(x, position_ids)  # cos, sin: [B, T, D]
        cfg = self.config
        n = cfg.num_key_value_layers if cfg.swiftkv else cfg.num_hidden_layers
        assert n is not None
        for layer in self.layers[:n]:
            x = layer(x, rope, rope)
        if not cfg.swiftkv:
            return self.norm(x[:, t - (num_query_tokens or t) :])
        # K/V of every later layer: its group's projections of norm_swiftkv(the
        # hidden state entering layer n).
        h = self.norm_swiftkv(x)
        kv = {}
        for i in range(n, cfg.num_hidden_layers):
            if cfg.has_kv_swiftkv(i):
                attn: LlamaSwiftKVAttention = self.layers[i].self_attn  # type: ignore[assignment]
                kv[i] = (attn.k_proj_swiftkv(h), attn.v_proj_swiftkv(h))
        tq = num_query_tokens or t
        x = x[:, t - tq :]
        rope_q = (rope[0][:, t - tq :], rope[1][:, t - tq :])
        for i in range(n, cfg.num_hidden_layers):
            x = self.layers[i](x, rope_q, rope, kv[cfg.kv_source_layer(i)])
        return self.norm(x)


class LlamaSwiftKVForCausalLM(LlamaSwiftKVPreTrainedModel):
    """Causal LM head on :class:`LlamaSwiftKVModel`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaSwiftKVConfig) -> None:
        super().__init__(config)
        self.model = LlamaSwiftKVModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def swiftkv(self, enabled: bool = True) -> LlamaSwiftKVForCausalLM:
        """Switch the SwiftKV path on or off (``config.swiftkv``); returns self.
        Off, the model is the original Llama."""
        if enabled:
            self.config.swiftkv_layout()  # needs a later layer
        self.config.swiftkv = bool(enabled)
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs: object,
    ) -> CausalLMOutputWithPast:
        """Logits ``[B, T or logits_to_keep, vocab]``; ``logits_to_keep > 0`` with
        SwiftKV on uses the prefill shortcut (later layers only for those tokens)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("LlamaSwiftKVForCausalLM (reference) does not support padding masks")
        if labels is not None and logits_to_keep:
            raise ValueError("labels need all logits (logits_to_keep=0)")
        hidden = self.model(input_ids, position_ids, num_query_tokens=logits_to_keep)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        # transformers types loss as the legacy FloatTensor; any float tensor is fine
        return CausalLMOutputWithPast(loss=loss, logits=logits)  # type: ignore[arg-type]

    @classmethod
    @torch.no_grad()
    def from_llama(
        cls,
        llama: LlamaForCausalLM,
        num_key_value_layers: int,
        key_value_group_size: int = 1,
        reduce: Literal["first", "mean"] = "first",
    ) -> LlamaSwiftKVForCausalLM:
        """A SwiftKV model (``swiftkv: true``) initialized from a Llama, as
        distillation starts: every Llama weight copied, ``norm_swiftkv`` from
        layer ``num_key_value_layers``'s ``input_layernorm``, ``q_proj_swiftkv``
        from each later layer's ``q_proj``, and each group's ``k/v_proj_swiftkv``
        from its layers' ``k/v_proj`` (``reduce``: the first layer's or the
        mean, in float32)."""
        if reduce not in ("first", "mean"):
            raise ValueError(f"reduce must be 'first' or 'mean', got {reduce!r}")
        cfg_dict = llama.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            cfg_dict.pop(key, None)
        config = LlamaSwiftKVConfig(
            **cfg_dict,
            swiftkv=True,
            num_key_value_layers=num_key_value_layers,
            key_value_group_size=key_value_group_size,
        )
        # PreTrainedModel.to's decorator hides its signature from mypy
        model = cls(config).to(dtype=llama.dtype)  # type: ignore[call-arg]
        # .to(dtype) also cast the RoPE buffers (inv_freq); a bf16 inv_freq
        # visibly changes logits, and from_pretrained keeps it fp32: take the
        # Llama's own buffers back.
        src_rope = dict(llama.model.rotary_emb.named_buffers())
        for name, _ in list(model.model.rotary_emb.named_buffers()):
            if name in src_rope:
                setattr(model.model.rotary_emb, name, src_rope[name].detach().clone())
        missing, unexpected = model.load_state_dict(llama.state_dict(), strict=False)
        bad_missing = [k for k in missing if "swiftkv" not in k]
        if bad_missing or unexpected:
            raise ValueError(
                f"Llama state dict does not match the SwiftKV model: missing {bad_missing}, "
                f"unexpected {unexpected}"
            )
        lay = config.swiftkv_layout()
        n, total = lay.num_key_value_layers, lay.num_hidden_layers
        layers = model.model.layers
        model.model.norm_swiftkv.weight.copy_(layers[n].input_layernorm.weight)
        for i in range(n, total):
            attn = layers[i].self_attn
            attn.q_proj_swiftkv.load_state_dict(attn.q_proj.state_dict())
        for s in range(lay.num_kv_slots):
            group = [layers[i].self_attn for i in lay.layers_for_slot(s)]
            target = group[0]
            for proj in ("k_proj", "v_proj"):
                for name, param in getattr(target, f"{proj}_swiftkv").named_parameters():
                    members = [getattr(getattr(a, proj), name) for a in group]
                    if reduce == "first":
                        param.copy_(members[0])
                    else:  # in float32, cast back
                        param.copy_(torch.stack([m.float() for m in members]).mean(0))
        return model


def _register() -> None:
    try:
        AutoConfig.register("llama_swiftkv", LlamaSwiftKVConfig)
    except ValueError:  # already registered (module re-import)
        pass
    try:
        AutoModelForCausalLM.register(LlamaSwiftKVConfig, LlamaSwiftKVForCausalLM)
    except ValueError:
        pass


_register()
