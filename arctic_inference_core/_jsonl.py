"""Reading JSON-lines prompt files shared by the training commands.

One record per line: ``{"prompt": str, "response": str (optional), "id": any
(optional)}``, the format of the agentic traces. Errors name the file and
line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_prompt_records(
    path: str | Path,
    *,
    limit: int | None = None,
    max_bytes: int | None = None,
    need_response: bool = False,
) -> list[dict[str, Any]]:
    """Records as ``{"id": str, "prompt": str, "response": str | None}``.

    Stops after ``limit`` records or once prompt + response text reaches
    ``max_bytes``. Raises ValueError for a missing file, bad JSON, a record
    without a string ``prompt`` (or ``response`` with ``need_response``), or
    no records at all.
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
            resp = rec.get("response")
            if need_response and not isinstance(resp, str):
                raise ValueError(f"{p}:{lineno}: needs a string 'response' field")
            resp = resp if isinstance(resp, str) else None
            out.append(
                {"id": str(rec.get("id", lineno)), "prompt": rec["prompt"], "response": resp}
            )
            total += len((rec["prompt"] + (resp or "")).encode())
            if (limit is not None and len(out) >= limit) or (
                max_bytes is not None and total >= max_bytes
            ):
                break
    if not out:
        raise ValueError(f"{p} holds no prompts (empty file)")
    return out
