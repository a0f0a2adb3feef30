"""The benchmark assets shipped in ``bench/assets/``: a small real model and a
small set of real agentic prompts, so the benchmarks print real numbers on
any machine.

- ``bench_model_dir(dtype)``: bench-lm (27.3M-parameter Llama code model),
  shipped int8 (``bench/assets/bench-lm-int8``), materialized once as an
  ordinary Hugging Face directory in ``dtype`` under
  ``bench/results/assets/`` (git-ignored) and reused while the shipped files
  are unchanged.
- ``agentic_prompts_path()``: 47 agentic coding requests from the public
  psf/requests history (JSON lines: id, family, prompt, response).

The int8 format (written by ``write_int8_asset``, which
``bench/assets/quantize_bench_lm.py`` runs): one safetensors file; for every
2-D weight ``W`` an int8 tensor under ``W``'s name and its fp16 per-row
scales under ``W.scale`` (symmetric absmax: ``W ~ q * scale[:, None]``);
1-D weights as fp32. See ``bench/assets/bench-lm-int8/README.md`` (both
assets: provenance, quantization, its measured effect).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "bench" / "assets"
BENCH_LM_INT8 = ASSETS / "bench-lm-int8"
AGENTIC_PROMPTS = ASSETS / "agentic-prompts.jsonl"
CACHE = REPO / "bench" / "results" / "assets"

WEIGHTS = "model.int8.safetensors"
SCALE_SUFFIX = ".scale"
FORMAT = "int8-absmax-per-row-fp16-scale"
COPIED = ("generation_config.json", "tokenizer.json", "tokenizer_config.json")
DTYPES = ("float32", "bfloat16", "float16")
STAMP = ".asset-stamp"
LOADER_VERSION = "1"  # bump when the materialized files change for the same asset


def agentic_prompts_path() -> Path:
    """The shipped agentic coding prompts (JSON lines with id, family, prompt,
    response)."""
    return AGENTIC_PROMPTS


def bench_model_dir(
    dtype: str = "float32", *, asset: Path = BENCH_LM_INT8, cache: Path = CACHE
) -> Path:
    """A Hugging Face directory of the shipped int8 model, dequantized to
    ``dtype`` (one of ``DTYPES``): ``cache/<asset name>-<dtype>``, written on
    first use and rewritten when the shipped files change."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    out = cache / f"{asset.name.removesuffix('-int8')}-{dtype}"
    stamp = f"{LOADER_VERSION} {dtype} {_asset_hash(asset)}"
    if _stamp(out) == stamp:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _materialize(asset, dtype, tmp)
    (tmp / STAMP).write_text(stamp)
    if out.exists():
        if _stamp(out) == stamp:  # another process got there first
            shutil.rmtree(tmp)
            return out
        shutil.rmtree(out)
    try:
        tmp.rename(out)
    except OSError:  # lost a race to another process writing the same files
        shutil.rmtree(tmp, ignore_errors=True)
        if _stamp(out) != stamp:
            raise
    return out


def model_to_serve(model: str | None, on_gpu: bool) -> tuple[str, str, str]:
    """(path, description, vLLM dtype) of the model a serving benchmark runs.

    The model is ``model`` when given, else the shipped bench-lm: the one
    default everywhere, so that numbers quoted from a default run are the
    ones any checkout gets. On CPU it is served in
    ``arctic_inference_vllm.testing.cpu_dtype()`` (bfloat16 only where the
    CPU has native bf16; the shipped model is materialized in that dtype);
    on GPU in the model's own dtype (``"auto"``; the shipped one in
    bfloat16)."""
    if on_gpu:
        dtype, materialize = "auto", "bfloat16"
    else:
        from arctic_inference_vllm.testing import cpu_dtype

        dtype = materialize = cpu_dtype()
    if model:
        return model, model, dtype
    path = bench_model_dir(materialize)
    return (
        str(path),
        "bench-lm (27.3M-parameter Llama code model, shipped int8 in bench/assets, "
        f"dequantized to {materialize})",
        dtype,
    )


# --------------------------------------------------------------------------- the format


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of a 2-D tensor: ``(q, scale)`` with
    ``q * scale[:, None] ~ w``; scale = row absmax / 127, rounded to fp16."""
    import torch

    w = w.float()
    scale = (w.abs().amax(dim=1) / 127.0).to(torch.float16)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # all-zero (or tiny) rows
    q = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in the int8 format."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, w in sorted(state.items()):
        if name.endswith(SCALE_SUFFIX):
            raise ValueError(f"weight name {name!r} ends with {SCALE_SUFFIX!r}")
        if w.ndim == 2:
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(w)
        elif w.ndim == 1:
            out[name] = w.to(torch.float32)
        else:
            raise ValueError(f"unexpected {w.ndim}-D weight {name}")
    return out


def dequantize_state(tensors: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """The int8 format back to a state dict in ``dtype``."""
    import torch

    target = getattr(torch, dtype)
    out = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if t.dtype == torch.int8:
            t = t.float() * tensors[name + SCALE_SUFFIX].float()[:, None]
        out[name] = t.to(target).contiguous()
    return out


def write_int8_asset(src: Path, out: Path) -> dict[str, int]:
    """Quantize the Hugging Face directory ``src`` (one ``model.safetensors``)
    into ``out``: the int8 weights, config.json (with a ``quantization`` entry
    that no library reads) and the copied tokenizer and generation files."""
    from safetensors.torch import load_file, save_file

    state = load_file(src / "model.safetensors")
    tensors = quantize_state(state)
    out.mkdir(parents=True, exist_ok=True)
    source_sha = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    save_file(
        tensors,
        out / WEIGHTS,
        metadata={"format": "pt", "quantization": FORMAT, "source_sha256": source_sha},
    )
    config = json.loads((src / "config.json").read_text())
    config["quantization"] = {
        "format": FORMAT,
        "weights": WEIGHTS,
        "source_dtype": config.get("dtype", config.get("torch_dtype")),
        "note": "not loadable as is: bench/benchlib/assets.py dequantizes it",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in COPIED:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    return {
        "matrices": sum(1 for n in tensors if n.endswith(SCALE_SUFFIX)),
        "bytes": (out / WEIGHTS).stat().st_size,
    }


# --------------------------------------------------------------------------- internals


def _asset_hash(asset: Path) -> str:
    """Hash of the files materializing reads (not the README)."""
    h = hashlib.sha256()
    for name in ("config.json", WEIGHTS, *COPIED):
        path = asset / name
        if path.is_file():
            h.update(name.encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _stamp(out: Path) -> str | None:
    try:
        return (out / STAMP).read_text()
    except OSError:
        return None


def _materialize(asset: Path, dtype: str, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    config = json.loads((asset / "config.json").read_text())
    if config.pop("quantization", {}).get("format", FORMAT) != FORMAT:
        raise ValueError(f"{asset}: not in the {FORMAT} format")
    state = dequantize_state(load_file(asset / WEIGHTS), dtype)
    out.mkdir(parents=True)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config["dtype"] = config["torch_dtype"] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in COPIED:
        if (asset / name).is_file():
            shutil.copyfile(asset / name, out / name)
