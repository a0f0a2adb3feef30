"""Guard the frozen public API: any change to public names or signatures must
come with a version bump, and a breaking change with a breaking bump
(major, or minor while the major version is 0). See docs/compatibility.md."""

from __future__ import annotations

import json

from public_api import (
    PUBLIC_MODULES,
    SNAPSHOT,
    available_modules,
    collect,
    current_version,
    module_of,
)

import arctic_inference_core


def _parse(v: str) -> tuple[int, int, int]:
    major, minor, patch = (int(x) for x in v.split(".")[:3])
    return major, minor, patch


def _is_breaking_bump(old: str, new: str) -> bool:
    (o_maj, o_min, _), (n_maj, n_min, _) = _parse(old), _parse(new)
    if o_maj == 0 and n_maj == 0:
        return n_min > o_min
    return n_maj > o_maj


def test_version_is_exported() -> None:
    assert arctic_inference_core.__version__ == current_version()
    _parse(current_version())


def test_public_api_matches_snapshot_or_version_was_bumped() -> None:
    snap = json.loads(SNAPSHOT.read_text())
    modules = available_modules()  # without torch, the torch parts are left out
    old_api = {k: v for k, v in snap["api"].items() if module_of(k) in modules}
    new_api = collect(modules)
    old_v, new_v = snap["version"], current_version()
    assert _parse(new_v) >= _parse(old_v), f"version went backwards: {old_v} -> {new_v}"
    if new_api == old_api:
        return
    removed_or_changed = sorted(k for k in old_api if new_api.get(k) != old_api[k])
    added = sorted(k for k in new_api if k not in old_api)
    hint = "then run `python tests/core/api/public_api.py --update` to record the new API"
    assert new_v != old_v, (
        f"public API changed without a version bump (still {old_v}): "
        f"changed/removed {removed_or_changed}, added {added}; bump "
        f"arctic_inference_core/_version.py ({hint})"
    )
    if removed_or_changed:
        assert _is_breaking_bump(old_v, new_v), (
            f"{removed_or_changed} changed or were removed: that breaks callers and needs a "
            f"breaking version bump from {old_v} (docs/compatibility.md)"
        )
    raise AssertionError(f"version bumped to {new_v} but the snapshot is stale; {hint}")


def test_snapshot_covers_every_public_module() -> None:
    snap = json.loads(SNAPSHOT.read_text())
    assert {module_of(k) for k in snap["api"]} == set(PUBLIC_MODULES)


def test_breaking_bump_rules() -> None:
    assert _is_breaking_bump("0.1.0", "0.2.0")
    assert not _is_breaking_bump("0.1.0", "0.1.1")
    assert _is_breaking_bump("1.4.2", "2.0.0")
    assert not _is_breaking_bump("1.4.2", "1.5.0")
