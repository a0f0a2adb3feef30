"""Write a stand-in checkpoint: a small Llama's files plus a heavy stack shape.

The directory gets the base's weights, tokenizer and generation config (hard
links when possible, else copies) and its config.json with ``architectures``
set to ``StandInLlamaForCausalLM`` and a ``standin`` object: the heavy
stack's Llama shape (``num_hidden_layers``, ``hidden_size``,
``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``,
``head_dim``, ``vocab_size``, ``rms_norm_eps``, ``rope_theta``).
``bench/standin_check.py`` writes one with Llama-3.1-8B's shape.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arctic_bench_standin import ARCHITECTURE
from arctic_bench_standin.model import CONFIG_KEY

HEAVY_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
)


def make_standin(base: Path, out: Path, heavy: Mapping[str, Any]) -> Path:
    """``out``: the stand-in of the Llama in ``base`` with a heavy stack of
    shape ``heavy`` (a Llama config; the keys in HEAVY_KEYS are used)."""
    missing = [k for k in HEAVY_KEYS if k not in heavy]
    if missing:
        raise ValueError(f"the heavy shape lacks {missing}")
    config_path = base / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{base} has no config.json (expected a Hugging Face Llama directory)")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "llama":
        raise ValueError(
            f"{base} is a {config.get('model_type')!r} model; the stand-in needs a Llama"
        )
    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.name == "config.json" or not f.is_file():
            continue
        target = out / f.name
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
    config["architectures"] = [ARCHITECTURE]
    config[CONFIG_KEY] = {k: heavy[k] for k in HEAVY_KEYS}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
