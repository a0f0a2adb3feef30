"""Benchmark apparatus, not product: a vLLM model that produces exactly a small
base model's greedy tokens (bench-lm) while costing what a Llama-3.1-8B costs
per engine step (see model.py). Installed only by the bench setup
(``pip install -e bench/standin``); it registers one architecture with vLLM
through its own ``vllm.general_plugins`` entry point."""

from __future__ import annotations

ARCHITECTURE = "StandInLlamaForCausalLM"


def register() -> None:
    """Idempotent; vLLM calls it in every process."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(
            ARCHITECTURE, "arctic_bench_standin.model:StandInLlamaForCausalLM"
        )
