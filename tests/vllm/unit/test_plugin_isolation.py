"""Registering the plugin changes exactly the suffix-decoding hooks of vLLM
and the arctic method's front-end hook (a pass-through for every other
config: tests/vllm/e2e/test_arctic_method.py), with the opt-in switch off or on;
the switch adds the SwiftKV architecture's config hook and the Ulysses
flag's EngineArgs wrappers (a pass-through without the flag:
tests/vllm/e2e/test_ulysses_vllm.py); registering is idempotent. Worker-side
hooks are installed only by the components that need them (Ulysses: only in
the workers of a Ulysses deployment, selected through worker_cls)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.vllm

SNAPSHOT = textwrap.dedent(
    """
    import importlib, os, sys
    os.environ.pop("ARCTIC_INFERENCE_VLLM_EXTRAS", None)
    if sys.argv[1:] == ["on"]:
        os.environ["ARCTIC_INFERENCE_VLLM_EXTRAS"] = "1"
    import vllm, vllm.config, vllm.engine.arg_utils, vllm.v1.spec_decode.suffix_decoding
    import vllm.model_executor.models.registry
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


HOOKS = [
    "vllm.config.speculative.SpeculativeConfig._validate_suffix_decoding",
    "vllm.config.speculative.has_arctic_inference",
    "vllm.engine.arg_utils.EngineArgs.create_speculative_config",
    "vllm.v1.spec_decode.suffix_decoding.SuffixDecodingProposer",
]


def changed_attributes(switch: str, what: str = "CHANGED") -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, switch], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in out.stdout.splitlines()
        if line.startswith(("CHANGED", "NEWMODS", "CONFIGHOOKS"))
    }
    return eval(lines[what])  # a printed list of str


def test_only_the_suffix_and_front_end_hooks_change() -> None:
    changed = changed_attributes("off")
    assert changed == HOOKS, changed


# patches/ulysses_args.py: the flag, its checks, and the TP x SP config
ULYSSES_HOOKS = [
    "vllm.engine.arg_utils.AsyncEngineArgs.__init__",
    "vllm.engine.arg_utils.EngineArgs.__init__",
    "vllm.engine.arg_utils.EngineArgs.add_cli_args",
    "vllm.engine.arg_utils.EngineArgs.create_engine_config",
    "vllm.engine.arg_utils.EngineArgs.from_cli_args",
]


def test_the_switch_adds_only_the_ulysses_flag_at_start_up() -> None:
    assert changed_attributes("on") == sorted(HOOKS + ULYSSES_HOOKS)


def test_only_the_switch_adds_the_swiftkv_config_hook() -> None:
    """patches/swiftkv_config.py: one entry in vLLM's per-architecture map."""
    assert changed_attributes("off", "CONFIGHOOKS") == []
    assert changed_attributes("on", "CONFIGHOOKS") == ["SwiftKVLlamaForCausalLM"]
