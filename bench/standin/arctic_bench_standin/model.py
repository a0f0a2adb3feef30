"""A vLLM model with a small model's tokens and a large model's step cost.

``StandInLlamaForCausalLM`` = a small Llama (bench-lm, loaded from its
checkpoint) + a *heavy stack*: decoder layers of a large model's shape
(default: Llama-3.1-8B, 32 layers, hidden 4096, 32 heads, 8 KV heads, MLP
14336), with their own attention layers and so their own real KV cache in
vLLM, plus a 128256-wide vocabulary projection for every row whose logits
are computed. The heavy stack reads the small model's final hidden states
(projected up), so it runs on real data every step.

Its results cannot change the small model's outputs, yet no compiler may
drop it: each result is reduced to a NaN test (``isnan(sum)``), which is
data-dependent, and used as

- ``where(nan, h + 1, h)`` on the hidden states: exactly ``h`` unless the
  heavy stack produced a NaN (random weights with RMSNorm never do);
- ``logits + nan`` on the logits: adds 0, and a constant per row would not
  change softmax or argmax anyway.

So greedy tokens and log-probabilities are the small model's, while every
step reads ~15 GB of weights and the KV cache of an 8B model, as an 8B model
does. Heavy weights are not in the checkpoint: they are drawn at load time
from a fixed seed (normal, std 0.02; norms 1).

The heavy shape lives in the checkpoint's ``config.json`` under ``standin``
(``make.py`` writes it). Tensor parallelism 1 only (a benchmark stand-in).

One vLLM change, in the stand-in's processes only: FlashAttention 3's
ahead-of-time scheduler metadata is built once per step for the model
config's head counts, and the two stacks have different ones (8 and 32 query
heads), so the stand-in runs FA3 with in-kernel scheduling, as vLLM itself
does for models whose layers disagree (several sliding windows).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import ReplicatedLinear
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    make_empty_intermediate_tensors_factory,
)

CONFIG_KEY = "standin"
HEAVY_PREFIXES = ("heavy_",)  # module names of the heavy stack (not in the checkpoint)
SEED = 1234


def heavy_config(base: Any) -> LlamaConfig:
    """The heavy stack's Llama config from ``base.standin`` (a dict)."""
    spec = getattr(base, CONFIG_KEY, None)
    if not isinstance(spec, dict):
        raise ValueError(
            f"a StandInLlamaForCausalLM config needs a '{CONFIG_KEY}' object with the heavy "
            "stack's shape; write the checkpoint with `python -m arctic_bench_standin.make`"
        )
    spec = dict(spec)
    theta = float(spec.pop("rope_theta", 500000.0))
    return LlamaConfig(
        **spec,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        max_position_embeddings=base.max_position_embeddings,
        tie_word_embeddings=False,
    )


@support_torch_compile(
    dynamic_arg_dims={
        "input_ids": 0,
        "positions": -1,
        "intermediate_tensors": 0,
        "inputs_embeds": 0,
    }
)
class StandInModel(nn.Module):
    """The small model's embedding, layers and norm (checkpoint names
    ``model.*``), then the heavy stack, in one compiled forward."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        heavy = heavy_config(config)
        self.config = config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(vllm_config=vllm_config, prefix=f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # Heavy layers are numbered after the small model's: vLLM binds KV
        # caches by the one layer index in each attention layer's name.
        first = config.num_hidden_layers
        self.heavy_in = ReplicatedLinear(config.hidden_size, heavy.hidden_size, bias=False)
        self.heavy_layers = nn.ModuleDict(
            {
                str(i): LlamaDecoderLayer(
                    vllm_config=vllm_config, prefix=f"{prefix}.heavy_layers.{i}", config=heavy
                )
                for i in range(first, first + heavy.num_hidden_layers)
            }
        )
        self.heavy_norm = RMSNorm(heavy.hidden_size, eps=heavy.rms_norm_eps)
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size
        )  # vLLM's runner asks every model for it (unused without pipeline parallelism)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            h, residual = layer(positions, h, residual)
        h, _ = self.norm(h, residual)

        x, _ = self.heavy_in(h)
        residual = None
        for layer in self.heavy_layers.values():
            x, residual = layer(positions, x, residual)
        x, _ = self.heavy_norm(x, residual)
        broken = torch.isnan(x.sum(dim=-1, keepdim=True))  # never true; data-dependent
        return torch.where(broken, h + 1, h)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loader = AutoWeightsLoader(self)  # the checkpoint has no heavy weights
        loaded = loader.load_weights(weights, mapper=LlamaModel.hf_to_vllm_mapper)
        return loaded | init_heavy(self)


def init_heavy(module: nn.Module) -> set[str]:
    """Draw the heavy parameters from a fixed seed; returns their names."""
    names = set()
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    for name, param in module.named_parameters():
        if not name.startswith(HEAVY_PREFIXES):
            continue
        with torch.no_grad():
            if param.dim() == 1:  # norms
                param.fill_(1.0)
            else:
                cpu = torch.empty(param.shape, dtype=torch.float32).normal_(0, 0.02, generator=gen)
                param.copy_(cpu.to(param.dtype))
        names.add(name)
    return names


def no_flash_attn_aot_schedule() -> None:
    """FA3 without ahead-of-time scheduler metadata (see the module
    docstring); idempotent; nothing where FlashAttention is not importable."""
    try:
        from vllm.v1.attention.backends.flash_attn import FlashAttentionMetadataBuilder
    except ImportError:
        return
    init = FlashAttentionMetadataBuilder.__init__
    if getattr(init, "_standin", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.aot_schedule = False

    __init__._standin = True  # type: ignore[attr-defined]
    FlashAttentionMetadataBuilder.__init__ = __init__  # type: ignore[method-assign]


class StandInLlamaForCausalLM(LlamaForCausalLM):
    """bench-lm's tokens at the heavy stack's cost (see the module docstring)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        parallel = vllm_config.parallel_config
        if parallel.tensor_parallel_size != 1 or parallel.pipeline_parallel_size != 1:
            raise ValueError("the stand-in model runs with tensor and pipeline parallel size 1")
        no_flash_attn_aot_schedule()  # before vLLM builds the attention metadata builders
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        heavy = heavy_config(self.config)
        # The large model's LM head, applied to the rows whose logits are computed.
        self.heavy_head_in = ReplicatedLinear(
            self.config.hidden_size, heavy.hidden_size, bias=False
        )
        self.heavy_head = ReplicatedLinear(heavy.hidden_size, heavy.vocab_size, bias=False)

    def _init_model(self, vllm_config: VllmConfig, prefix: str = "", layer_type: Any = None) -> Any:
        return StandInModel(vllm_config=vllm_config, prefix=prefix)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits = super().compute_logits(hidden_states)
        heavy, _ = self.heavy_head(self.heavy_head_in(hidden_states)[0])
        broken = torch.isnan(heavy.amax(dim=-1, keepdim=True))  # never true; data-dependent
        return None if logits is None else logits + broken.to(logits.dtype)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded = super().load_weights(weights)
        heads = {n: p for n, p in self.named_parameters() if n.startswith("heavy_head")}
        return loaded | {n for n in init_heavy(self) if n in heads}


class StandInInspector:
    """A vLLM worker extension (``worker_extension_cls=
    "arctic_bench_standin.model.StandInInspector"``) for checks of the stand-in."""

    def standin_kv_cache_layers(self) -> list[str]:
        """Attention layers that own a KV cache, by name."""
        runner = self.model_runner  # type: ignore[attr-defined]
        ctx = runner.compilation_config.static_forward_context
        return sorted(n for n, layer in ctx.items() if getattr(layer, "kv_cache", None) is not None)
