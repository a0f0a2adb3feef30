"""Registering the plugin changes exactly the targets of the manifest's
front-end patches (arctic_inference_vllm/patches/__init__.py): the
suffix-decoding hooks of vLLM, the arctic method's front-end hook (a
pass-through for every other config: tests/vllm/e2e/test_arctic_method.py)
and the CPU expand-kernel fix,
with the opt-in switch off or on; the switch adds the targets of the
front-end extras: the SwiftKV architecture's config hook and the Ulysses
flag's EngineArgs wrappers (a pass-through without the flag:
tests/vllm/e2e/test_ulysses_vllm.py); registering is idempotent. Worker-side
hooks are installed only by the components that need them (Ulysses: only in
the workers of a Ulysses deployment, selected through worker_cls), and each
worker phase changes exactly its own targets."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import pytest

from arctic_inference_vllm.patches import PATCHES, Phase

pytestmark = pytest.mark.vllm


def targets(phase: Phase) -> list[str]:
    """The manifest's targets of a phase that are attributes (not map entries)."""
    return [t for p in PATCHES if p.phase is phase for t in p.targets if "[" not in t]


def map_entries(phase: Phase) -> list[str]:
    """The keys of the manifest's MODELS_CONFIG_MAP entries of a phase."""
    prefix = "vllm.model_executor.models.config.MODELS_CONFIG_MAP['"
    return [
        t.removeprefix(prefix).removesuffix("']")
        for p in PATCHES
        if p.phase is phase
        for t in p.targets
        if t.startswith(prefix)
    ]


SNAPSHOT = textwrap.dedent(
    """
    import importlib, os, sys
    os.environ.pop("ARCTIC_INFERENCE_VLLM_EXTRAS", None)
    if sys.argv[1:] == ["on"]:
        os.environ["ARCTIC_INFERENCE_VLLM_EXTRAS"] = "1"
    import vllm, vllm.config, vllm.engine.arg_utils, vllm.v1.spec_decode.suffix_decoding
    import vllm.model_executor.models.registry, vllm.utils.cpu_triton_utils
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    def snapshot():
        seen = {}
        for name, mod in list(sys.modules.items()):
            if not name.startswith("vllm") or mod is None:
                continue
            for attr, value in list(vars(mod).items()):
                seen[f"{name}.{attr}"] = id(value)
                if isinstance(value, type) and value.__module__ == name:
                    for k, v in list(vars(value).items()):
                        seen[f"{name}.{attr}.{k}"] = id(v)
        return seen

    before = snapshot()
    config_hooks_before = set(MODELS_CONFIG_MAP)
    modules_before = set(sys.modules)
    import arctic_inference_vllm
    arctic_inference_vllm.register()
    arctic_inference_vllm.register()  # idempotent
    after = snapshot()
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    new_vllm_modules = sorted(m for m in set(sys.modules) - modules_before if m.startswith("vllm"))
    print("CHANGED", changed)
    print("NEWMODS", new_vllm_modules)
    print("CONFIGHOOKS", sorted(set(MODELS_CONFIG_MAP) - config_hooks_before))
    """
)


HOOKS = sorted(targets(Phase.FRONT_END))


@functools.cache
def _snapshot_lines(switch: str) -> dict[str, str]:
    """SNAPSHOT's printed lists, one fresh process per switch setting (each
    imports vLLM, ~10 s on 2 cores): the tests below read the same run."""
    out = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, switch], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in out.stdout.splitlines()
        if line.startswith(("CHANGED", "NEWMODS", "CONFIGHOOKS"))
    }


def changed_attributes(switch: str, what: str = "CHANGED") -> list[str]:
    return eval(_snapshot_lines(switch)[what])  # a printed list of str


def test_only_the_suffix_and_front_end_hooks_change() -> None:
    changed = changed_attributes("off")
    assert changed == HOOKS, changed


# patches/ulysses_args.py: the flag, its checks, and the TP x SP config
ULYSSES_HOOKS = targets(Phase.FRONT_END_EXTRAS)


def test_the_manifest_lists_the_hooks_checked_here() -> None:
    """The expected lists come from the manifest; they must not be empty or
    overlap (a target in two phases would hide in the 'on' run)."""
    assert len(HOOKS) == 6 and len(ULYSSES_HOOKS) == 5
    assert not set(HOOKS) & set(ULYSSES_HOOKS)
    assert map_entries(Phase.FRONT_END) == []
    assert map_entries(Phase.FRONT_END_EXTRAS) == ["LlamaSwiftKVForCausalLM"]


def test_the_switch_adds_only_the_ulysses_flag_at_start_up() -> None:
    assert changed_attributes("on") == sorted(HOOKS + ULYSSES_HOOKS)


def test_only_the_switch_adds_the_swiftkv_config_hook() -> None:
    """patches/swiftkv_config.py: one entry in vLLM's per-architecture map."""
    assert changed_attributes("off", "CONFIGHOOKS") == map_entries(Phase.FRONT_END)
    assert changed_attributes("on", "CONFIGHOOKS") == map_entries(Phase.FRONT_END_EXTRAS)


WORKER_PHASE = textwrap.dedent(
    """
    import importlib, sys
    from arctic_inference_vllm.patches import PATCHES, Phase, apply_phase
    from arctic_inference_vllm.patches._wrap import ORIGINAL, is_patched

    phase = Phase[sys.argv[1]]

    def owner_and_name(target):
        parts = target.split(".")
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for part in parts[i:-1]:
                obj = getattr(obj, part)
            return obj, parts[-1]
        raise LookupError(target)

    every = [t for p in PATCHES for t in p.targets if "[" not in t]
    owners = {t: owner_and_name(t) for t in every}  # imports every target's module
    before = {t: vars(o).get(n, getattr(o, n)) for t, (o, n) in owners.items()}
    apply_phase(phase)
    apply_phase(phase)  # idempotent
    after = {t: vars(o).get(n, getattr(o, n)) for t, (o, n) in owners.items()}
    changed = sorted(t for t in every if before[t] is not after[t])
    print("CHANGED", changed)
    for t in changed:
        fn = getattr(after[t], "__func__", after[t])
        assert is_patched(fn), t
        assert getattr(fn, ORIGINAL) is getattr(before[t], "__func__", before[t]), t
    """
)


@pytest.mark.parametrize("phase", [Phase.ARCTIC_WORKER, Phase.ULYSSES_WORKER])
def test_each_worker_phase_changes_exactly_its_targets(phase: Phase) -> None:
    """A worker phase, applied (twice) in a fresh process where every target of
    the manifest is imported, replaces exactly its own targets, each marked as
    ours with vLLM's original kept."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER_PHASE, phase.name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("CHANGED"))
    assert eval(line.split(" ", 1)[1]) == sorted(targets(phase))
    assert targets(phase)
