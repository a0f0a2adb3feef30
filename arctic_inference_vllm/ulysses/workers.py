"""The workers of a Ulysses deployment: vLLM's own CPU or GPU worker with
the Ulysses-worker patches (sequence-parallel groups, attention layers)
applied before the device and the model exist, and the model's forward
wrapped after it loads (runtime.py). The front end selects them through
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

    def init_device(self) -> None:
        from arctic_inference_vllm.patches import Phase, apply_phase

        # the groups before vLLM builds them in init_device, Attention before
        # the model is built; raises on an unchecked vLLM
        apply_phase(Phase.ULYSSES_WORKER)
        super().init_device()  # type: ignore[misc]  # vLLM's worker, mixed in at runtime

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        from arctic_inference_vllm.ulysses import runtime

        super().load_model(*args, **kwargs)  # type: ignore[misc]  # vLLM's worker
        runtime.wrap_model_forward(self.model_runner.model)  # type: ignore[attr-defined]  # vLLM's worker


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
