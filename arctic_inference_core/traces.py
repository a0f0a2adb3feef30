"""Reading JSON-lines prompt traces: the one trace reader of the project.

One record per line, the format of the agentic traces::

    {"id": any (optional), "family": str (optional), "prompt": str,
     "response": str (optional)}

Used by the training commands (``arctic_inference_core.speculator.train``,
``arctic_inference_core.swiftkv.distill``) and the benchmarks. Errors name the
file and line. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_prompt_records"]


def read_prompt_records(
    path: str | Path,
    *,
    limit: int | None = None,
    max_bytes: int | None = None,
    need_response: bool = False,
) -> list[dict[str, Any]]:
    """Records as ``{"id": str, "family": str | None, "prompt": str, "response": str | None}``.

    ``id`` is the record's ``id`` as a string (the 1-based line number when
    absent); ``family`` and ``response`` are None when absent or not strings.
    Stops after ``limit`` records or once prompt + response text reaches
    ``max_bytes`` (UTF-8 bytes). Blank lines are skipped.

    Raises:
        ValueError: a missing file, bad JSON, a record without a string
            ``prompt`` (or ``response`` with ``need_response``), or no records
            at all. The message names the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"prompts file not found: {p} does not exist")
    out: list[dict[str, Any]] = []
    total = 0
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise ValueError(f"{p}:{lineno}: record has no string 'prompt' field")
            prompt: str = rec["prompt"]
            resp = rec.get("response")
            if need_response and not isinstance(resp, str):
                raise ValueError(f"{p}:{lineno}: needs a string 'response' field")
            response = resp if isinstance(resp, str) else None
            fam = rec.get("family")
            family = fam if isinstance(fam, str) else None
            out.append(
                {
                    "id": str(rec.get("id", lineno)),
                    "family": family,
                    "prompt": prompt,
                    "response": response,
                }
            )
            total += len((prompt + (response or "")).encode())
            if (limit is not None and len(out) >= limit) or (
                max_bytes is not None and total >= max_bytes
            ):
                break
    if not out:
        raise ValueError(f"{p} holds no prompts (empty file)")
    return out
