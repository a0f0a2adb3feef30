"""The workers of a Ulysses deployment: vLLM's own CPU or GPU worker with
the Ulysses-worker patches (sequence-parallel groups, attention layers)
applied before the device and the model exist, and the model's forward
wrapped after it loads (runtime.py). With shift parallelism (shift.py) the
worker also builds the SP model beside vLLM's (TP) model, shares the KV
cache with it, and picks the model per step in ``execute_model``. The front end selects them through
vLLM's public ``parallel_config.worker_cls`` (patches/ulysses_args.py), so
no other process is touched.

The classes are built on first access (``resolve_obj_by_qualname`` reads
them from this module), so importing it never imports a platform's worker.
"""

from __future__ import annotations

from typing import Any

# vLLM's worker -> ours (the platforms' defaults for worker_cls="auto").
WORKERS = {
    "vllm.v1.worker.gpu_worker.Worker": "UlyssesGPUWorker",
    "vllm.v1.worker.cpu_worker.CPUWorker": "UlyssesCPUWorker",
}


def worker_cls_for(vllm_worker_cls: str) -> str:
    """The qualified name of our worker replacing vLLM's ``vllm_worker_cls``."""
    if vllm_worker_cls not in WORKERS:
        raise ValueError(
            f"Ulysses sequence parallelism runs on vLLM's CPU and GPU workers "
            f"({', '.join(WORKERS)}); this deployment uses worker_cls={vllm_worker_cls!r}"
        )
    return f"{__name__}.{WORKERS[vllm_worker_cls]}"


class _UlyssesWorkerMixin:
    """Mixed in before vLLM's worker class (built in :func:`__getattr__`)."""

    # shift parallelism: this worker's two models (None: Ulysses alone)
    _arctic_shift: Any = None

    def init_device(self) -> None:
        from arctic_inference_vllm.patches import Phase, apply_phase

        # the groups before vLLM builds them in init_device, Attention before
        # the model is built; raises on an unchecked vLLM
        apply_phase(Phase.ULYSSES_WORKER)
        super().init_device()  # type: ignore[misc]  # vLLM's worker, mixed in at runtime

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        from arctic_inference_vllm import settings
        from arctic_inference_vllm.ulysses import runtime, shift

        ours = settings.adapter_settings(self.vllm_config)  # type: ignore[attr-defined]
        # the SP model's config is copied before vLLM registers its layers
        sp_config = (
            shift.sp_config(self.vllm_config)  # type: ignore[attr-defined]
            if ours.enable_shift_parallel
            else None
        )
        super().load_model(*args, **kwargs)  # type: ignore[misc]  # vLLM's worker
        runner = self.model_runner  # type: ignore[attr-defined]  # vLLM's worker
        if sp_config is None:
            runtime.wrap_model_forward(runner.model)
            return
        self._arctic_shift = shift.load_sp_model(
            sp_config, runner.model, ours.shift_parallel_threshold
        )

    def initialize_from_config(self, kv_cache_config: Any) -> None:
        from arctic_inference_vllm.ulysses import shift

        super().initialize_from_config(kv_cache_config)  # type: ignore[misc]  # vLLM's worker
        if self._arctic_shift is not None:
            shift.bind_kv_cache(
                self._arctic_shift,
                self.vllm_config.compilation_config.static_forward_context,  # type: ignore[attr-defined]
            )

    def execute_model(self, scheduler_output: Any) -> Any:
        """Shift parallelism: the step's path from its scheduled tokens (the
        same scheduler output on every rank, so the same choice)."""
        from arctic_inference_vllm.ulysses import shift

        tokens = scheduler_output.total_num_scheduled_tokens
        if self._arctic_shift is None or not tokens:
            return super().execute_model(scheduler_output)  # type: ignore[misc]  # vLLM's worker
        requests = len(scheduler_output.num_scheduled_tokens)
        runner = self.model_runner  # type: ignore[attr-defined]  # vLLM's worker
        with shift.model_for(runner, self._arctic_shift, tokens, requests):
            return super().execute_model(scheduler_output)  # type: ignore[misc]  # vLLM's worker


def __getattr__(name: str) -> type:
    for base_qualname, ours in WORKERS.items():
        if name == ours:
            import importlib

            module, _, cls = base_qualname.rpartition(".")
            base = getattr(importlib.import_module(module), cls)
            worker = type(ours, (_UlyssesWorkerMixin, base), {"__module__": __name__})
            globals()[ours] = worker
            return worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
