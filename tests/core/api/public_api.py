"""Collect the public API (names and signatures) of arctic_inference_core.

`python tests/core/api/public_api.py --update` rewrites tests/core/api/api_snapshot.json after
an intended API change (together with a version bump, see
docs/compatibility.md).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path

PUBLIC_MODULES = [
    "arctic_inference_core",
    "arctic_inference_core.suffix",
    "arctic_inference_core.traces",
]
SNAPSHOT = Path(__file__).with_name("api_snapshot.json")


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "<no signature>"


def _describe(obj: object) -> object:
    if inspect.isclass(obj):
        members: dict[str, str] = {"__init__": _signature(obj)}
        for name, member in sorted(vars(obj).items()):
            if name.startswith("_") and name not in ("__len__", "__getitem__"):
                continue
            if isinstance(member, property):
                members[name] = "property"
            elif isinstance(member, (staticmethod, classmethod)):
                members[name] = _signature(member.__func__)
            elif callable(member):
                members[name] = _signature(member)
            elif name in getattr(obj, "__dataclass_fields__", {}):
                members[name] = "field"
        for name in getattr(obj, "__dataclass_fields__", {}):
            members[name] = "field"
        for name in getattr(obj, "__slots__", ()):
            members[name] = "attribute"
        return members
    if callable(obj):
        return _signature(obj)
    return type(obj).__name__


def collect() -> dict[str, object]:
    api: dict[str, object] = {}
    for mod_name in PUBLIC_MODULES:
        mod = importlib.import_module(mod_name)
        for name in sorted(mod.__all__):
            if name == "__version__":
                continue
            api[f"{mod_name}.{name}"] = _describe(getattr(mod, name))
    return api


def current_version() -> str:
    return importlib.import_module("arctic_inference_core").__version__


if __name__ == "__main__":
    if "--update" not in sys.argv:
        print(json.dumps(collect(), indent=2))
        sys.exit(0)
    SNAPSHOT.write_text(
        json.dumps({"version": current_version(), "api": collect()}, indent=2, sort_keys=True)
        + "\n"
    )
    print(f"wrote {SNAPSHOT}")
