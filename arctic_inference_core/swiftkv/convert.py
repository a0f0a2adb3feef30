"""Convert a Hugging Face Llama checkpoint into a SwiftKV (``swiftkv_llama``) one.

    python -m arctic_inference_core.swiftkv.convert --llama PATH --out DIR \\
        --num-key-value-layers K [--group-size G] [--reduce first|mean] [--force]

Every weight is copied; ``norm_swiftkv`` is initialized from layer K's
``input_layernorm`` and the stacked K/V projection from the later layers'
``k_proj``/``v_proj`` (see :meth:`SwiftKVLlamaForCausalLM.from_llama`). The
result is saved with ``save_pretrained`` (same dtype as the Llama), tokenizer
files are copied, and the saved directory is reloaded through
``AutoConfig``/``AutoModelForCausalLM`` and checked to give the same logits.

The converted model is only the starting point: for K < L - 1 it is an
approximation of the Llama; run :mod:`arctic_inference_core.swiftkv.distill`
to train the new projection against the original model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


class ConversionError(ValueError):
    """Bad input to the conversion (missing directory, non-Llama config, bad K)."""


def read_llama_config(path: Path) -> dict:
    """The ``config.json`` of a Llama checkpoint directory, validated."""
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"Llama checkpoint directory not found: {path}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConversionError(f"no config.json in {path}")
    cfg = json.loads(cfg_file.read_text())
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise ConversionError(
            f"{path} is not a Llama checkpoint: model_type={model_type!r} (expected 'llama')"
        )
    return cfg


def check_num_key_value_layers(num_key_value_layers: int, num_hidden_layers: int) -> None:
    if not 1 <= num_key_value_layers <= num_hidden_layers - 1:
        raise ConversionError(
            f"--num-key-value-layers must be in [1, num_hidden_layers - 1] = [1, {num_hidden_layers - 1}], "
            f"got {num_key_value_layers}"
        )


def convert(
    llama_path: str | Path,
    out: str | Path,
    num_key_value_layers: int,
    group_size: int = 1,
    reduce: str = "first",
    force: bool = False,
    verify: bool = True,
) -> dict:
    """Convert and save; returns a small summary dict (also written as
    ``swiftkv_conversion.json`` in ``out``)."""
    llama_path, out = Path(llama_path), Path(out)
    cfg = read_llama_config(llama_path)
    check_num_key_value_layers(num_key_value_layers, int(cfg["num_hidden_layers"]))
    if reduce not in ("first", "mean"):
        raise ConversionError(f"--reduce must be 'first' or 'mean', got {reduce!r}")
    if group_size < 1:
        raise ConversionError(f"--group-size must be >= 1, got {group_size}")
    later = int(cfg["num_hidden_layers"]) - num_key_value_layers
    if group_size > later:
        raise ConversionError(
            f"--group-size ({group_size}) is larger than the number of later layers ({later})"
        )
    if out.resolve() == llama_path.resolve():
        raise ConversionError("--out must differ from --llama")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConversionError(f"output directory {out} exists and is not empty (use --force)")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    from arctic_inference_core.swiftkv.hf_llama import SwiftKVLlamaConfig, SwiftKVLlamaForCausalLM

    llama = LlamaForCausalLM.from_pretrained(llama_path, dtype="auto").eval()
    model = SwiftKVLlamaForCausalLM.from_llama(
        llama, num_key_value_layers, group_size, reduce=reduce
    ).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    copied = []
    for name in TOKENIZER_FILES:
        src = llama_path / name
        dst = out / name
        if not src.is_file() or (name == "generation_config.json" and dst.exists()):
            continue
        if dst.exists():
            dst.unlink()
        shutil.copyfile(src, dst)
        copied.append(name)

    summary = {
        "source": str(llama_path),
        "num_hidden_layers": int(cfg["num_hidden_layers"]),
        "num_key_value_layers": num_key_value_layers,
        "key_value_group_size": group_size,
        "reduce": reduce,
        "dtype": str(model.dtype).replace("torch.", ""),
        "tokenizer_files": copied,
    }
    if verify:
        loaded_cfg = AutoConfig.from_pretrained(out)
        if not isinstance(loaded_cfg, SwiftKVLlamaConfig):
            raise RuntimeError(
                f"reloaded config is {type(loaded_cfg).__name__}, not SwiftKVLlamaConfig"
            )
        loaded = AutoModelForCausalLM.from_pretrained(out, dtype="auto").eval()
        if not isinstance(loaded, SwiftKVLlamaForCausalLM):
            raise RuntimeError(
                f"reloaded model is {type(loaded).__name__}, not SwiftKVLlamaForCausalLM"
            )
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, int(cfg["vocab_size"]), (1, 16), generator=g)
        with torch.no_grad():
            a = model(ids).logits.float()
            b = loaded(ids).logits.float()
            ref = llama(ids).logits.float()
        if not torch.equal(a, b):
            raise RuntimeError(
                f"reloaded model differs from the converted one (max |diff| {(a - b).abs().max():.3g})"
            )
        summary["reload_check"] = "ok"
        summary["max_abs_logit_diff_vs_llama_random_ids"] = float((a - ref).abs().max())
        summary["greedy_agreement_vs_llama_random_ids"] = float(
            (a.argmax(-1) == ref.argmax(-1)).float().mean()
        )
    (out / "swiftkv_conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m arctic_inference_core.swiftkv.convert",
        description="Convert a Hugging Face Llama checkpoint into a SwiftKV (swiftkv_llama) checkpoint.",
    )
    p.add_argument("--llama", required=True, help="Llama checkpoint directory (HF format)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--num-key-value-layers",
        type=int,
        required=True,
        help="K: full layers before the SwiftKV projection, in [1, L-1]",
    )
    p.add_argument("--group-size", type=int, default=1, help="AcrossKV group size (default 1)")
    p.add_argument(
        "--reduce",
        choices=("first", "mean"),
        default="first",
        help="how a group's K/V weights are initialized from its layers (default first)",
    )
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check")
    args = p.parse_args(argv)
    try:
        summary = convert(
            args.llama,
            args.out,
            args.num_key_value_layers,
            args.group_size,
            args.reduce,
            force=args.force,
            verify=not args.no_verify,
        )
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
