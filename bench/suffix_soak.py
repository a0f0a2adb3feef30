"""Memory of the suffix cache over time: many tokens through eviction.

    python bench/suffix_soak.py                       # 10 million tokens
    python bench/suffix_soak.py --tokens 200000       # quick

Requests go through the cache's whole life cycle (``start_request`` with a
prompt, ``add_active_response`` in chunks, ``stop_request``), so their
responses are cached, and ``max_cached_requests`` evicts the oldest. Token
streams imitate code: every response is a few slices of one Zipf-distributed
corpus (shared text, as agentic traffic shares it), each with a few
substitutions. Reported every ``--every`` requests: cached tokens, the bytes
the native trees hold (``memory_bytes()``) and per cached token, and the
process's resident memory (RSS). At the end every cached response is evicted:
the trees' bytes must return to their floor (the empty cache's), and RSS is
read again after ``malloc_trim`` (glibc keeps freed pages otherwise).
Checks: the plateau (trees' bytes once the cache is full) stays within
``--plateau-tolerance`` of its first value, and the bytes return to the floor.
Results: ``<out-dir>/suffix_soak.{md,json}``; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.paths import RESULTS
from benchlib.stamps import stamped_markdown, version_stamp, write_results
from benchlib.tables import fmt, table

from arctic_inference_core.suffix import SuffixDecodingCache

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def trim_heap() -> None:
    """Give freed heap pages back to the system (glibc only; else nothing)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Traffic:
    """Prompts and responses as slices of one Zipf corpus, lightly edited."""

    def __init__(self, seed: int, vocab: int, corpus_tokens: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.corpus = (self.rng.zipf(1.2, corpus_tokens) % vocab).astype(np.int32)

    def text(self, n: int, slices: int = 4, edits: int = 4) -> np.ndarray:
        parts = []
        for size in np.diff(np.linspace(0, n, slices + 1).astype(int)):
            start = int(self.rng.integers(0, len(self.corpus) - size))
            parts.append(self.corpus[start : start + size])
        out = np.concatenate(parts)
        at = self.rng.integers(0, n, edits)
        out[at] = self.rng.integers(0, self.vocab, edits)
        return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    traffic = Traffic(a.seed, a.vocab, a.corpus_tokens)
    cache = SuffixDecodingCache(
        max_tree_depth=a.max_tree_depth, max_cached_requests=a.max_cached_requests
    )
    trim_heap()
    floor = {"tree_bytes": cache.memory_bytes(), "rss": rss_bytes()}
    samples: list[dict[str, Any]] = []
    requests = -(-a.tokens // a.response_tokens)
    t0 = time.perf_counter()
    for i in range(requests):
        rid = f"r{i}"
        cache.start_request(rid, traffic.text(a.prompt_tokens))
        response = traffic.text(a.response_tokens)
        for chunk in np.array_split(response, max(1, a.response_tokens // a.chunk_tokens)):
            cache.add_active_response(rid, chunk)
        cache.stop_request(rid)
        if (i + 1) % a.every == 0 or i + 1 == requests:
            tokens = cache.num_cached_tokens()
            tree = cache.memory_bytes()
            samples.append(
                {
                    "requests": i + 1,
                    "tokens_in": (i + 1) * a.response_tokens,
                    "cached_requests": len(cache.cached_requests),
                    "cached_tokens": tokens,
                    "tree_bytes": tree,
                    "bytes_per_token": tree / tokens if tokens else float("nan"),
                    "rss": rss_bytes(),
                    "seconds": time.perf_counter() - t0,
                }
            )
    fill_seconds = time.perf_counter() - t0
    for rid in list(cache.cached_requests):
        cache.evict_cached_response(rid)
    after = {"tree_bytes": cache.memory_bytes(), "rss": rss_bytes()}
    trim_heap()
    after["rss_trimmed"] = rss_bytes()
    cache.check_integrity()

    full = [s for s in samples if s["cached_requests"] >= a.max_cached_requests]
    plateau = [s["tree_bytes"] for s in full]
    drift = (max(plateau) / plateau[0] - 1.0) if plateau else float("nan")
    return {
        "requests": requests,
        "tokens_in": requests * a.response_tokens,
        "fill_seconds": fill_seconds,
        "us_per_token": 1e6 * fill_seconds / (requests * (a.response_tokens + a.prompt_tokens)),
        "floor": floor,
        "samples": samples,
        "after_eviction": after,
        "plateau_bytes": [min(plateau), max(plateau)] if plateau else None,
        "plateau_drift": drift,
        "checks": {
            "plateau": bool(plateau) and drift <= a.plateau_tolerance,
            "returns_to_floor": after["tree_bytes"] <= floor["tree_bytes"],
        },
    }


def report(a: argparse.Namespace, r: dict[str, Any]) -> str:
    mib = 1 << 20
    shown = r["samples"]
    if len(shown) > 12:  # first, last and evenly spaced rows between
        idx = sorted(set(np.linspace(0, len(shown) - 1, 12).astype(int)))
        shown = [shown[i] for i in idx]
    rows = [
        [
            f"{s['requests']:,}",
            f"{s['tokens_in']:,}",
            f"{s['cached_tokens']:,}",
            fmt(s["tree_bytes"] / mib, 1),
            fmt(s["bytes_per_token"], 1),
            fmt(s["rss"] / mib, 1),
        ]
        for s in shown
    ]
    after = r["after_eviction"]
    checks = r["checks"]
    lo, hi = r["plateau_bytes"] or (float("nan"), float("nan"))
    lines = [
        "# Suffix cache memory over time",
        "",
        f"{r['tokens_in']:,} response tokens in {r['requests']:,} requests of "
        f"{a.prompt_tokens} prompt + {a.response_tokens} response tokens (added in chunks of "
        f"{a.chunk_tokens}); max_cached_requests={a.max_cached_requests}, "
        f"max_tree_depth={a.max_tree_depth}; Zipf corpus of {a.corpus_tokens:,} tokens "
        f"(vocabulary {a.vocab}). {fmt(r['fill_seconds'], 1)} s in all, "
        f"{fmt(r['us_per_token'], 3)} us per token through the cache's life cycle.",
        "",
        *table(
            ["requests", "tokens in", "cached tokens", "trees (MiB)", "bytes/token", "RSS (MiB)"],
            rows,
            "rrrrrr",
        ),
        "",
        f"- Plateau (cache full): trees {fmt(lo / mib, 1)}-{fmt(hi / mib, 1)} MiB, drift "
        f"{fmt(100 * r['plateau_drift'], 2)}% "
        f"({'ok' if checks['plateau'] else 'FAILED'}; tolerance {100 * a.plateau_tolerance:g}%).",
        f"- After evicting every cached response: trees {after['tree_bytes']:,} bytes, floor "
        f"{r['floor']['tree_bytes']:,} ({'ok' if checks['returns_to_floor'] else 'FAILED'}); "
        f"RSS {fmt(after['rss'] / mib, 1)} MiB, {fmt(after['rss_trimmed'] / mib, 1)} MiB after "
        f"malloc_trim, {fmt(r['floor']['rss'] / mib, 1)} MiB before the run.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tokens", type=int, default=10_000_000, help="response tokens in all")
    p.add_argument("--response-tokens", type=int, default=1000)
    p.add_argument("--prompt-tokens", type=int, default=500)
    p.add_argument("--chunk-tokens", type=int, default=8, help="tokens per add_active_response")
    p.add_argument("--max-cached-requests", type=int, default=2000)
    p.add_argument("--max-tree-depth", type=int, default=64)
    p.add_argument("--vocab", type=int, default=16384)
    p.add_argument("--corpus-tokens", type=int, default=2_000_000)
    p.add_argument("--every", type=int, default=250, help="requests between samples")
    p.add_argument("--plateau-tolerance", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    for name in ("tokens", "response_tokens", "prompt_tokens", "chunk_tokens", "every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.corpus_tokens <= a.response_tokens:
        p.error("--corpus-tokens must exceed --response-tokens")
    stamp = version_stamp()
    result = run(a)
    md = report(a, result)
    write_results(
        a.out_dir,
        "suffix_soak",
        md,
        {"args": vars(a) | {"out_dir": str(a.out_dir)}, **result},
        stamp,
    )
    print(stamped_markdown(md, stamp))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
