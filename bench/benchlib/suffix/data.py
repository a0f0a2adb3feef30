"""Recorded requests for the replay: reading and tokenizing a JSON-lines
trace file (``id``, ``family``, ``prompt``, ``response``), with the token ids
cached on disk beside the results, keyed by the trace file's and the
tokenizer's contents.

Tokenization uses the tekken tokenizer shipped inside ``mistral_common``
(nothing is downloaded).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from arctic_inference_core.traces import read_prompt_records

FAMILIES = ("edit_file", "edit_diff", "new_file")

Tokens = npt.NDArray[np.int32]


@dataclass
class Trace:
    """One recorded request, tokenized."""

    id: str
    family: str
    prompt: Tokens
    response: Tokens


def find_tekken_file() -> Path:
    """Newest tekken tokenizer file shipped inside the mistral_common package."""
    import mistral_common

    data_dir = Path(mistral_common.__file__).parent / "data"
    files = sorted(data_dir.glob("tekken*.json"))
    if not files:
        raise FileNotFoundError(f"no tekken*.json tokenizer file in {data_dir}")
    return files[-1]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _token_cache_path(traces: Path, tokenizer: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(
        (_file_digest(traces) + _file_digest(tokenizer) + tokenizer.name).encode()
    ).hexdigest()[:16]
    return cache_dir / f"tokens-{traces.stem}-{tokenizer.stem}-{key}.npz"


def _flatten(arrays: Sequence[Tokens]) -> tuple[Tokens, npt.NDArray[np.int64]]:
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    return flat.astype(np.int32), offsets


def _split(flat: Tokens, offsets: npt.NDArray[np.int64]) -> list[Tokens]:
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def tokenize_traces(traces: Path, tokenizer: Path) -> list[Trace]:
    """Read the JSON lines (the core's trace reader) and tokenize prompts and
    responses (no BOS/EOS)."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    tok = Tekkenizer.from_file(str(tokenizer))

    def encode(text: str) -> Tokens:
        return np.asarray(tok.encode(text, bos=False, eos=False), dtype=np.int32)

    out = []
    for rec in read_prompt_records(traces, need_response=True):
        if rec["family"] is None:
            raise ValueError(f"{traces}: record {rec['id']!r} has no string 'family' field")
        out.append(Trace(rec["id"], rec["family"], encode(rec["prompt"]), encode(rec["response"])))
    return out


def save_token_cache(path: Path, traces: Sequence[Trace]) -> None:
    prompt_flat, prompt_off = _flatten([t.prompt for t in traces])
    resp_flat, resp_off = _flatten([t.response for t in traces])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        ids=np.array([t.id for t in traces]),
        families=np.array([t.family for t in traces]),
        prompt_flat=prompt_flat,
        prompt_off=prompt_off,
        resp_flat=resp_flat,
        resp_off=resp_off,
    )


def load_token_cache(path: Path) -> list[Trace]:
    with np.load(path, allow_pickle=False) as z:
        prompts = _split(z["prompt_flat"], z["prompt_off"])
        responses = _split(z["resp_flat"], z["resp_off"])
        return [
            Trace(str(i), str(f), p, r)
            for i, f, p, r in zip(z["ids"], z["families"], prompts, responses)
        ]


def load_traces(traces: Path, tokenizer: Path, cache_dir: Path) -> list[Trace]:
    """Tokenized traces, from the on-disk cache when it matches the inputs."""
    cache = _token_cache_path(traces, tokenizer, cache_dir)
    if cache.exists():
        return load_token_cache(cache)
    out = tokenize_traces(traces, tokenizer)
    save_token_cache(cache, out)
    return out
