"""The worker-process protocol of the benchmarks.

A benchmark that measures several configurations runs each in its own
process (one engine per process; engines in one process share state such as
vLLM's metrics registry). The child prints one ``RESULT {json}`` line per
result on stdout (:func:`emit_result`); anything else it prints, and its
stderr, is log. The parent runs the child with :func:`run_worker_process`,
which sends stderr to a log file and returns the parsed results, failing
with the log's path when the child fails or reports a different number of
results than expected.

With ``ARCTIC_BENCH_INPROCESS_ENGINES=1`` (the benchmark tests set it) the
children run vLLM's engine core in their own process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``): two interpreter start-ups less per
engine on CPU, for runs whose timings do not matter.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "
INPROCESS_ENV = "ARCTIC_BENCH_INPROCESS_ENGINES"


def emit_result(result: Mapping[str, Any]) -> None:
    """In the worker: report one result to the parent (one stdout line)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_results(stdout: str) -> list[dict[str, Any]]:
    """In the parent: the results among a worker's stdout lines, in order."""
    return [
        json.loads(line[len(RESULT_PREFIX) :])
        for line in stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]


def run_worker_process(
    name: str, cmd: list[str], log: Path, env: dict[str, str], expect: int
) -> list[dict[str, Any]]:
    """Run a benchmark worker (stderr to ``log``); its ``RESULT {json}`` lines,
    which must number ``expect``.

    Raises:
        SystemExit: the worker exited non-zero or reported another number of
            results; the message names ``name`` and ``log``.
    """
    if os.environ.get(INPROCESS_ENV) == "1":
        env = {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env)
    results = parse_results(proc.stdout)
    if proc.returncode != 0 or len(results) != expect:
        raise SystemExit(f"{name} run failed (exit {proc.returncode}); see {log}")
    return results
