"""The adapter's modules import each other without cycles (static check of
every ``import`` statement, also those inside functions and
``TYPE_CHECKING``; a package's own ``__init__`` imported implicitly by its
submodules does not count). The patches depend on the features' code, never
the other way round through a patch module: e.g. the arctic proposer applies
its phase through the manifest, and the runner patch knows only
speculator/step.py."""

from __future__ import annotations

import ast
from pathlib import Path

import arctic_inference_vllm

PKG = Path(arctic_inference_vllm.__file__).parent
ROOT = "arctic_inference_vllm"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = [ROOT, *f.relative_to(PKG).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                    for a in node.names
                ]
            else:
                continue
            graph[mod].update(t for t in targets if t in mods and t != mod)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_graph_sees_imports() -> None:
    graph = _graph()
    assert f"{ROOT}.speculator.step" in graph[f"{ROOT}.patches.speculator_runner"]
    assert f"{ROOT}.patches" in graph[f"{ROOT}.speculator.proposer"]
    assert f"{ROOT}.speculator.scored_suffix" in graph[f"{ROOT}.speculator.proposer"]  # lazy


def test_no_import_cycles() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_runner_patch_does_not_import_the_proposer() -> None:
    assert f"{ROOT}.speculator.proposer" not in _graph()[f"{ROOT}.patches.speculator_runner"]


def test_cycle_finder_finds_cycles() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
