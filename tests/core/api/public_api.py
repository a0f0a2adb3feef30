"""Collect the public API (names and signatures) of arctic_inference_core.

`python tests/core/api/public_api.py --update` rewrites tests/core/api/api_snapshot.json after
an intended API change (together with a version bump, see
docs/compatibility.md).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path

# Every module the vLLM adapter or a user imports (stability levels in
# docs/compatibility.md). The torch parts are collected only where torch is
# installed.
PUBLIC_MODULES = [
    "arctic_inference_core",
    "arctic_inference_core.suffix",
    "arctic_inference_core.traces",
    "arctic_inference_core.speculator",
    "arctic_inference_core.speculator.train",
    "arctic_inference_core.swiftkv",
    "arctic_inference_core.swiftkv.convert",
    "arctic_inference_core.swiftkv.distill",
    "arctic_inference_core.ulysses",
]
TORCH_MODULES = [
    m
    for m in PUBLIC_MODULES
    if m.startswith(("arctic_inference_core.speculator", "arctic_inference_core.swiftkv"))
    or m == "arctic_inference_core.ulysses"
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


def available_modules() -> list[str]:
    """PUBLIC_MODULES that can be imported here (the torch parts need torch)."""
    have_torch = importlib.util.find_spec("torch") is not None
    return [m for m in PUBLIC_MODULES if have_torch or m not in TORCH_MODULES]


def module_of(key: str) -> str:
    """The PUBLIC_MODULES entry a snapshot key (``module.name``) belongs to."""
    return key.rsplit(".", 1)[0]


def collect(modules: list[str] | None = None) -> dict[str, object]:
    api: dict[str, object] = {}
    for mod_name in PUBLIC_MODULES if modules is None else modules:
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
