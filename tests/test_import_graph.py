"""Neither package's modules import each other in a cycle (static check of
every ``import`` statement, also those inside functions and
``TYPE_CHECKING``; a package's own ``__init__`` imported implicitly by its
submodules does not count). In the adapter the patches depend on the
features' code, never the other way round through a patch module: the arctic
proposer applies its phase through the manifest, and the runner patch knows
only speculator/step.py. Needs neither torch nor vLLM: it reads the files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGES = ("arctic_inference_core", "arctic_inference_vllm")
REPO = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    root = REPO / package  # the source tree (an editable install maps it elsewhere too)
    mods = {}
    for f in root.rglob("*.py"):
        parts = [package, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    mods = _modules(package)
    names = set(mods) | {f"{package}._C"}  # the native module has no .py file
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                    for a in node.names
                ]
            else:
                continue
            graph[mod].update(t for t in targets if t in mods and t != mod)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
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
    core, adapter = (import_graph(p) for p in PACKAGES)
    c, a = PACKAGES
    assert f"{c}.speculator.draft" in core[f"{c}.speculator.modules"]
    assert f"{c}._validate" in core[f"{c}.suffix.cache"]
    assert f"{a}.speculator.step" in adapter[f"{a}.patches.speculator_runner"]
    assert f"{a}.patches" in adapter[f"{a}.speculator.proposer"]
    assert f"{a}.speculator.drafting" in adapter[f"{a}.speculator.proposer"]  # lazy


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    cycle = find_cycle(import_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
