"""Reference SwiftKV Llama for Hugging Face ``transformers`` (CPU-friendly, no KV cache).

Importing this module registers ``model_type="swiftkv_llama"`` with
``AutoConfig`` and ``AutoModelForCausalLM``.

Model (absolute layers ``0 .. N-1``, ``n = num_key_value_layers``):

- layers ``0 .. n-1`` are plain Llama decoder layers (own q/k/v/o projections);
- ``x_n`` (hidden state after layer ``n-1``) is normalized by ``norm_swiftkv``
  and fed to one :class:`~arctic_inference_core.swiftkv.SwiftKVProjection`
  that produces K/V of all later layers (AcrossKV: one slot per group);
- later layers ``n .. N-1`` have only ``q_proj``/``o_proj``: their attention
  reads the slot's K/V; MLPs and norms are as in Llama.

``forward(input_ids, logits_to_keep=k)`` with ``k > 0`` is the SwiftKV prefill
shortcut: all tokens go through the first ``n`` layers and the projection, but
only the last ``k`` tokens run the later layers. With ``k == 0`` all tokens run
all layers (training/distillation form). Both give the same logits for the last
``k`` tokens (tested).

Initialization from a Llama (:meth:`SwiftKVLlamaForCausalLM.from_llama`) copies
every weight, sets ``norm_swiftkv`` to layer ``n``'s ``input_layernorm`` and
stacks the later layers' ``k_proj``/``v_proj`` (the starting point for SwiftKV
distillation). With ``n == N - 1`` (one later layer, group size 1) this is
exactly the original Llama (tested); for smaller ``n`` it is an approximation
that distillation trains.

Limitations: no KV cache / ``generate`` incremental decoding, no padding
``attention_mask`` (right-aligned batches of equal length only), default and
HF-supported RoPE scaling through ``LlamaRotaryEmbedding``.
"""

from __future__ import annotations

from typing import Literal, TypeVar, cast

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

from arctic_inference_core.swiftkv.layout import SwiftKVLayout
from arctic_inference_core.swiftkv.ops import SwiftKVProjection, apply_rope

__all__ = ["SwiftKVLlamaConfig", "SwiftKVLlamaForCausalLM", "SwiftKVLlamaModel"]

_Config = TypeVar("_Config", bound=type)


def _strict_if_available(cls: _Config) -> _Config:
    """transformers >= 5: configs are ``huggingface_hub`` @strict dataclasses."""
    try:
        from huggingface_hub.dataclasses import strict
    except ImportError:  # pragma: no cover
        return cls
    return cast(_Config, strict(cls))  # strict(cls) returns cls, made strict


@_strict_if_available
class SwiftKVLlamaConfig(LlamaConfig):
    """:class:`~transformers.LlamaConfig` plus ``num_key_value_layers`` (full layers
    before the SwiftKV projection; default ``num_hidden_layers // 2``) and
    ``key_value_group_size`` (AcrossKV, default 1)."""

    model_type = "swiftkv_llama"

    num_key_value_layers: int | None = None
    key_value_group_size: int = 1

    def __post_init__(self, **kwargs: object) -> None:
        super().__post_init__(**kwargs)
        if self.num_key_value_layers is None:
            self.num_key_value_layers = max(1, self.num_hidden_layers // 2)
        self.swiftkv_layout()  # validate

    def swiftkv_layout(self) -> SwiftKVLayout:
        """The validated :class:`SwiftKVLayout` of this config."""
        assert self.num_key_value_layers is not None
        return SwiftKVLayout(
            num_hidden_layers=self.num_hidden_layers,
            num_key_value_layers=self.num_key_value_layers,
            key_value_group_size=self.key_value_group_size,
            num_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            hidden_size=self.hidden_size,
        )


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


class SwiftKVLlamaAttention(nn.Module):
    """Llama attention; later (SwiftKV) layers have no k_proj/v_proj."""

    def __init__(self, config: SwiftKVLlamaConfig, layer_idx: int, swiftkv: bool) -> None:
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
        self.layer_idx = layer_idx
        self.swiftkv = swiftkv
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        if not swiftkv:
            self.k_proj = nn.Linear(
                config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias
            )
            self.v_proj = nn.Linear(
                config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias
            )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x ``[B, Tq, hidden]``; cos/sin ``[B, Tq, D]`` for the query positions;
        ``kv`` (later layers only) ``[B, Tk, Hkv, D]`` each, RoPE already applied."""
        b, tq, _ = x.shape
        q = self.q_proj(x).view(b, tq, self.num_heads, self.head_dim)
        q = apply_rope(
            q.reshape(b * tq, self.num_heads, self.head_dim),
            cos.reshape(b * tq, -1),
            sin.reshape(b * tq, -1),
        ).view(b, tq, self.num_heads, self.head_dim)
        if kv is None:
            k = self.k_proj(x).view(b * tq, self.num_kv_heads, self.head_dim)
            k = apply_rope(k, cos.reshape(b * tq, -1), sin.reshape(b * tq, -1)).view(
                b, tq, self.num_kv_heads, -1
            )
            v = self.v_proj(x).view(b, tq, self.num_kv_heads, self.head_dim)
        else:
            k, v = kv
        return self.o_proj(_attend(q, k, v, self.scaling))


class SwiftKVLlamaDecoderLayer(nn.Module):
    def __init__(self, config: SwiftKVLlamaConfig, layer_idx: int, swiftkv: bool) -> None:
        super().__init__()
        self.self_attn = SwiftKVLlamaAttention(config, layer_idx, swiftkv)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, kv=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class SwiftKVLlamaPreTrainedModel(PreTrainedModel):
    config_class = SwiftKVLlamaConfig
    config: SwiftKVLlamaConfig
    base_model_prefix = "model"
    _no_split_modules = ["SwiftKVLlamaDecoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, SwiftKVProjection):
            module.weight.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.zero_()
        else:
            super()._init_weights(module)


class SwiftKVLlamaModel(SwiftKVLlamaPreTrainedModel):
    """Decoder stack; returns the final-normed hidden states of the kept tokens."""

    def __init__(self, config: SwiftKVLlamaConfig) -> None:
        super().__init__(config)
        self.layout = config.swiftkv_layout()
        if self.layout.num_kv_heads is None or self.layout.head_dim is None:
            raise ValueError("swiftkv_llama needs num_key_value_heads and head_dim")
        self._kv_shape = (self.layout.num_kv_heads, self.layout.head_dim)
        n = self.layout.num_key_value_layers
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            SwiftKVLlamaDecoderLayer(config, i, swiftkv=i >= n)
            for i in range(config.num_hidden_layers)
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_swiftkv = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.swiftkv_proj = SwiftKVProjection(self.layout, bias=config.attention_bias)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        num_query_tokens: int = 0,
    ) -> torch.Tensor:
        """``input_ids`` ``[B, T]``. ``num_query_tokens`` > 0: only the last that many
        tokens run the later layers (SwiftKV prefill); 0: all tokens do."""
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}"
            )
        b, t = input_ids.shape
        if not 0 <= num_query_tokens <= t:
            raise ValueError(f"num_query_tokens must be in [0, {t}], got {num_query_tokens}")
        tq = num_query_tokens or t
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device)[None].expand(b, t)
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(x, position_ids)  # [B, T, D]
        lay = self.layout
        for layer in self.layers[: lay.num_key_value_layers]:
            x = layer(x, cos, sin)
        # SwiftKV: K/V of every later layer from one projection of norm_swiftkv(x).
        h = self.norm_swiftkv(x).reshape(b * t, -1)
        k, v = self.swiftkv_proj(h, cos.reshape(b * t, -1), sin.reshape(b * t, -1))
        k = k.view(lay.num_kv_slots, b, t, *self._kv_shape)
        v = v.view(lay.num_kv_slots, b, t, *self._kv_shape)
        x, cos_q, sin_q = x[:, t - tq :], cos[:, t - tq :], sin[:, t - tq :]
        for i in range(lay.num_key_value_layers, lay.num_hidden_layers):
            s = lay.slot_for_layer(i)
            x = self.layers[i](x, cos_q, sin_q, kv=(k[s], v[s]))
        return self.norm(x)


class SwiftKVLlamaForCausalLM(SwiftKVLlamaPreTrainedModel):
    """Causal LM head on :class:`SwiftKVLlamaModel`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SwiftKVLlamaConfig) -> None:
        super().__init__(config)
        self.model = SwiftKVLlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs: object,
    ) -> CausalLMOutputWithPast:
        """Logits ``[B, T or logits_to_keep, vocab]``; ``logits_to_keep > 0`` uses the
        SwiftKV shortcut (later layers only for those tokens)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("SwiftKVLlamaForCausalLM (reference) does not support padding masks")
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
    ) -> SwiftKVLlamaForCausalLM:
        """SwiftKV model initialized from a Llama: all weights copied, ``norm_swiftkv``
        from layer ``num_key_value_layers``'s ``input_layernorm``, stacked projection
        from the later layers' ``k_proj``/``v_proj`` (see :func:`stack_kv_weights`)."""
        cfg_dict = llama.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version"):
            cfg_dict.pop(key, None)
        config = SwiftKVLlamaConfig(
            **cfg_dict,
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
        lay = config.swiftkv_layout()
        later_kv = {
            f"model.layers.{i}.self_attn.{p}_proj.{w}"
            for i in range(lay.num_key_value_layers, lay.num_hidden_layers)
            for p in "kv"
            for w in ("weight", "bias")
        }
        bad_missing = [
            k for k in missing if not k.startswith(("model.norm_swiftkv.", "model.swiftkv_proj."))
        ]
        bad_unexpected = [k for k in unexpected if k not in later_kv]
        if bad_missing or bad_unexpected:
            raise ValueError(
                f"Llama state dict does not match the SwiftKV model: missing {bad_missing}, "
                f"unexpected {bad_unexpected}"
            )
        src = llama.model.layers
        model.model.norm_swiftkv.weight.copy_(src[lay.num_key_value_layers].input_layernorm.weight)
        later = range(lay.num_key_value_layers, lay.num_hidden_layers)
        attns = [src[i].self_attn for i in later]
        bias = config.attention_bias
        model.model.swiftkv_proj.load_per_layer(
            [a.k_proj.weight for a in attns],
            [a.v_proj.weight for a in attns],
            [a.k_proj.bias for a in attns] if bias else None,
            [a.v_proj.bias for a in attns] if bias else None,
            reduce=reduce,
        )
        return model


def _register() -> None:
    try:
        AutoConfig.register("swiftkv_llama", SwiftKVLlamaConfig)
    except ValueError:  # already registered (module re-import)
        pass
    try:
        AutoModelForCausalLM.register(SwiftKVLlamaConfig, SwiftKVLlamaForCausalLM)
    except ValueError:
        pass


_register()
