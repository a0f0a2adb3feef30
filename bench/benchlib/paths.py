"""Where the benchmarks find things: the repository, the results directory
and the optional ``../shared`` directory beside the checkout (the bench-lm
model and the agentic trace file, present in some workplaces only)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"  # default --out-dir of every script

SHARED = REPO.parent / "shared"
BENCH_LM = SHARED / "bench-lm"  # 27M-parameter code Llama (Hugging Face directory)
BENCH_DATA = SHARED / "bench-data"
AGENTIC_TRACES = BENCH_DATA / "agentic-requests.jsonl"  # id, family, prompt, response


def shared_bench_lm() -> Path | None:
    """``../shared/bench-lm`` when it holds a model, else None."""
    return BENCH_LM if (BENCH_LM / "config.json").is_file() else None


def shared_traces() -> Path | None:
    """``../shared/bench-data/agentic-requests.jsonl`` when present, else None."""
    return AGENTIC_TRACES if AGENTIC_TRACES.is_file() else None
