"""Convert a Hugging Face Llama checkpoint into a SwiftKV one, in the released
layout (ArcticTraining's ``LlamaSwiftKV``, ``model_type`` "llama_swiftkv").

    python -m arctic_inference_core.swiftkv.convert --base-model LLAMA --out DIR \\
        --num-key-value-layers K [--group-size G] [--reduce first|mean] [--force] [--no-verify]

(``--llama`` is the older spelling of ``--base-model``.)

Every Llama weight is kept; ``norm_swiftkv`` is initialized from layer K's
``input_layernorm``, each later layer's ``q_proj_swiftkv`` from its
``q_proj``, and each AcrossKV group's ``k/v_proj_swiftkv`` (on its first
layer) from the group's ``k_proj``/``v_proj`` (see
:meth:`LlamaSwiftKVForCausalLM.from_llama`). The config says ``swiftkv:
true``; with ``swiftkv: false`` the same checkpoint is the original Llama.
The result is saved with ``save_pretrained`` (same dtype as the Llama),
tokenizer files are copied, and the saved directory is reloaded through
``AutoConfig``/``AutoModelForCausalLM`` and checked to give the same logits.

The converted model is only the starting point: for K < L - 1 it is an
approximation of the Llama; run :mod:`arctic_inference_core.swiftkv.distill`
to train the new projection against the original model.

The command skeleton (flags, ``CommandError``, progress lines, JSON result on
stdout) is shared with :mod:`arctic_inference_core.speculator.train` and
:mod:`arctic_inference_core.swiftkv.distill`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from arctic_inference_core._command import (
    CommandError,
    Log,
    Reporter,
    add_base_model,
    add_force,
    add_out,
    check_flag_int,
    log_stderr,
    new_parser,
    run_main,
)

__all__ = [
    "ConversionError",
    "TOKENIZER_FILES",
    "build_parser",
    "convert",
    "main",
    "parse_args",
    "read_llama_config",
    "run",
]

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


#: The error of the commands (the name this module had for it).
ConversionError = CommandError


def read_llama_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a Llama checkpoint directory, validated.

    Raises:
        CommandError: no such directory, no ``config.json``, not a Llama.
    """
    path = Path(path)
    if not path.is_dir():
        raise CommandError(f"Llama checkpoint directory not found: {path}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CommandError(f"no config.json in {path}")
    cfg: dict[str, Any] = json.loads(cfg_file.read_text())
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise CommandError(
            f"{path} is not a Llama checkpoint: model_type={model_type!r} (expected 'llama')"
        )
    return cfg


def check_num_key_value_layers(num_key_value_layers: int, num_hidden_layers: int) -> None:
    if not 1 <= num_key_value_layers <= num_hidden_layers - 1:
        raise CommandError(
            f"--num-key-value-layers must be in [1, num_hidden_layers - 1] = [1, {num_hidden_layers - 1}], "
            f"got {num_key_value_layers}"
        )


def convert(
    base_model: str | Path,
    out: str | Path,
    num_key_value_layers: int,
    group_size: int = 1,
    reduce: str = "first",
    force: bool = False,
    verify: bool = True,
    log: Log | None = None,
) -> dict[str, Any]:
    """Convert the Llama in ``base_model`` and save it in ``out``; returns a
    small summary dict (also written as ``swiftkv_conversion.json`` in ``out``).

    Raises:
        CommandError: bad input (the message names the flag).
    """
    say = Reporter("convert", log if log is not None else lambda line: None)
    llama_path, out = Path(base_model), Path(out)
    cfg = read_llama_config(llama_path)
    check_num_key_value_layers(num_key_value_layers, int(cfg["num_hidden_layers"]))
    if reduce != "first" and reduce != "mean":
        raise CommandError(f"--reduce must be 'first' or 'mean', got {reduce!r}")
    mode: Literal["first", "mean"] = "first" if reduce == "first" else "mean"
    check_flag_int("--group-size", group_size, 1)
    later = int(cfg["num_hidden_layers"]) - num_key_value_layers
    if group_size > later:
        raise CommandError(
            f"--group-size ({group_size}) is larger than the number of later layers ({later})"
        )
    if later % group_size:
        raise CommandError(
            f"--group-size ({group_size}) must divide the number of later layers ({later}): "
            "the released layout has no smaller last group"
        )
    if out.resolve() == llama_path.resolve():
        raise CommandError("--out must differ from --base-model")
    if out.exists() and any(out.iterdir()) and not force:
        raise CommandError(f"output directory {out} exists and is not empty (use --force)")
    say(
        f"{llama_path} ({cfg['num_hidden_layers']} layers) -> {out}: "
        f"{num_key_value_layers} full layers, AcrossKV group size {group_size}"
    )

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    from arctic_inference_core.swiftkv.hf_llama import LlamaSwiftKVConfig, LlamaSwiftKVForCausalLM

    llama = LlamaForCausalLM.from_pretrained(llama_path, dtype="auto").eval()
    model = LlamaSwiftKVForCausalLM.from_llama(llama, num_key_value_layers, group_size, reduce=mode)
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves PreTrainedModel.eval untyped
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

    summary: dict[str, Any] = {
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
        if not isinstance(loaded_cfg, LlamaSwiftKVConfig):
            raise RuntimeError(
                f"reloaded config is {type(loaded_cfg).__name__}, not LlamaSwiftKVConfig"
            )
        loaded = AutoModelForCausalLM.from_pretrained(out, dtype="auto").eval()
        if not isinstance(loaded, LlamaSwiftKVForCausalLM):
            raise RuntimeError(
                f"reloaded model is {type(loaded).__name__}, not LlamaSwiftKVForCausalLM"
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
    say.done(f"llama_swiftkv checkpoint in {out}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = new_parser(
        "arctic_inference_core.swiftkv.convert",
        "Convert a Hugging Face Llama checkpoint into a SwiftKV checkpoint (the released "
        "LlamaSwiftKV layout, model_type llama_swiftkv).",
    )
    add_base_model(p, "Llama checkpoint directory (HF format)", "--llama")
    add_out(p, "output directory")
    p.add_argument(
        "--num-key-value-layers",
        type=int,
        required=True,
        help="K: full layers before the SwiftKV projection, in [1, L-1]",
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=1,
        help="AcrossKV group size, dividing L-K (default 1)",
    )
    p.add_argument(
        "--reduce",
        choices=("first", "mean"),
        default="first",
        help="how a group's K/V weights are initialized from its layers (default first)",
    )
    add_force(p, "write into a non-empty --out")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace, log: Log | None = None) -> dict[str, Any]:
    """:func:`convert` with the command's flags; returns its summary. Progress
    lines go to ``log`` (``None``: stderr)."""
    return convert(
        args.base_model,
        args.out,
        args.num_key_value_layers,
        args.group_size,
        args.reduce,
        force=args.force,
        verify=not args.no_verify,
        log=log_stderr if log is None else log,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``error: ...`` and status 2 on bad input; the summary
    on stdout."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
