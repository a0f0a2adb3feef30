"""The vLLM adapter uses the core only through public modules and names (the
ones the API snapshot records, tests/core/api/public_api.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from public_api import PUBLIC_MODULES

ADAPTER = Path(__file__).resolve().parents[3] / "arctic_inference_vllm"


def _core_imports() -> list[tuple[str, str, str]]:
    """(file, module, name) for each import of the core in the adapter."""
    found = []
    for path in sorted(ADAPTER.rglob("*.py")):
        rel = str(path.relative_to(ADAPTER.parent))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [
                    (rel, a.name, "")
                    for a in node.names
                    if a.name.startswith("arctic_inference_core")
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "arctic_inference_core"
            ):
                found += [(rel, node.module or "", a.name) for a in node.names]
    return found


def test_adapter_imports_only_public_core_names() -> None:
    imports = _core_imports()
    assert imports, "no core import found: is the adapter at " + str(ADAPTER)
    bad = []
    for rel, module, name in imports:
        if module not in PUBLIC_MODULES or name.startswith("_") and name != "__version__":
            bad.append(f"{rel}: {module} {name}".strip())
    assert not bad, f"the adapter imports private core code: {bad}"
