"""Fixtures of the benchmark tests: ``bench/`` on ``sys.path`` (as when a
script runs as ``python bench/<script>.py``, so ``import benchlib`` works),
the scripts loaded as modules, a tiny random Llama and a small trace file."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
# The scripts' engine workers run vLLM's engine core in their own process:
# nothing here is timed, and each engine starts two interpreters fewer.
os.environ["ARCTIC_BENCH_INPROCESS_ENGINES"] = "1"


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("suffix_sim")``: the script ``bench/suffix_sim.py`` as a module."""
    return _load_script


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama directory, built once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from arctic_inference_vllm.testing import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def edit_traces(tmp_path: Path) -> Path:
    """Four ``edit_file`` prompts (no responses) as a JSON-lines trace file."""
    path = tmp_path / "traces.jsonl"
    rows = [
        {"id": f"t{i}", "family": "edit_file", "prompt": "def f(x):\n    return x + 1\n" * (3 + i)}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
