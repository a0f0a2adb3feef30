"""Introspection for tests and debugging, through vLLM's public worker
extension hook: start vLLM with
``worker_extension_cls="arctic_inference_vllm.diagnostics.SuffixCacheInspector"``
(or ``SwiftKVInspector``, ``UlyssesInspector``) and call
``llm.collective_rpc("suffix_cache_state")``."""

from __future__ import annotations

from typing import Any


class SuffixCacheInspector:
    """Mixed into vLLM's worker class by ``worker_extension_cls``."""

    def suffix_cache_state(self) -> dict[str, Any]:
        """The proposer class, and counts of its suffix cache after checking
        every invariant of the trees."""
        runner = getattr(self, "model_runner", None)
        drafter = getattr(runner, "drafter", None)
        cache = getattr(drafter, "suffix_cache", None)
        if cache is None:
            return {"proposer": type(drafter).__name__, "active": None}
        cache.check_integrity()
        return {
            "proposer": type(drafter).__name__,
            "active": len(cache.active_requests),
            "cached": len(cache.cached_requests),
            "tokens": cache.num_cached_tokens(),
        }


class SwiftKVInspector:
    """Mixed into vLLM's worker class by ``worker_extension_cls``
    (``arctic_inference_vllm.diagnostics.SwiftKVInspector``): what a served
    SwiftKV model runs, per forward pass."""

    def _swiftkv_model(self) -> Any:
        return self.model_runner.get_model().model  # type: ignore[attr-defined]

    def swiftkv_record_rows(self) -> None:
        """Start recording, per forward pass, the rows the last full layer and
        the first later layer ran."""
        model = self._swiftkv_model()
        n = model.layout.num_key_value_layers
        self._swiftkv_rows: list[list[int]] = []
        if getattr(self, "_swiftkv_hooks", None):
            return

        def full(_module: Any, args: tuple[Any, ...]) -> None:
            self._swiftkv_rows.append([args[1].shape[0], 0])

        def later(_module: Any, args: tuple[Any, ...]) -> None:
            if self._swiftkv_rows:
                self._swiftkv_rows[-1][1] = args[1].shape[0]

        self._swiftkv_hooks = [
            model.layers[n - 1].register_forward_pre_hook(full),
            model.layers[n].register_forward_pre_hook(later),
        ]

    def swiftkv_rows(self) -> list[list[int]]:
        """[rows of the last full layer, rows of the first later layer] per pass."""
        return list(self._swiftkv_rows)

    def swiftkv_cache_owners(self) -> list[int]:
        """For each later layer, which writer's KV cache tensor it reads
        (index into the writers; -1: none of them)."""
        model = self._swiftkv_model()
        writers = [w.attn.kv_cache for w in model.kv_writers]
        owners = []
        for layer in model.layers[model.layout.num_key_value_layers :]:
            cache = layer.self_attn.attn.kv_cache
            owners.append(next((i for i, w in enumerate(writers) if _same_cache(w, cache)), -1))
        return owners


class UlyssesInspector:
    """Mixed into vLLM's worker class by ``worker_extension_cls``
    (``arctic_inference_vllm.diagnostics.UlyssesInspector``): what one rank of
    a Ulysses deployment holds and runs."""

    def _ulysses_layers(self) -> tuple[Any, Any]:
        from vllm.model_executor.layers.attention.attention import Attention
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        modules = list(model.modules())
        embed = next(m for m in modules if isinstance(m, VocabParallelEmbedding))
        return embed, next(m for m in modules if isinstance(m, Attention))

    def ulysses_layout(self) -> dict[str, Any]:
        """Worker class, SP size and rank, TP size, and the first attention
        layer's heads and KV cache shape on this rank."""
        from vllm.distributed import parallel_state as ps

        from arctic_inference_vllm.ulysses import runtime

        _, attn = self._ulysses_layers()
        cache = attn.kv_cache[0] if isinstance(attn.kv_cache, (list, tuple)) else attn.kv_cache
        return {
            "worker": type(self).__name__,
            "sp": runtime.size(),
            "sp_rank": runtime.rank(),
            "tp": ps.get_tensor_model_parallel_world_size(),
            "heads": attn.num_heads,
            "kv_heads": attn.num_kv_heads,
            "kv_cache_shape": list(cache.shape),
        }

    def ulysses_record_rows(self) -> None:
        """Start recording, per forward pass, the tokens this rank embedded and
        the query rows its first attention layer's backend attended over."""
        self._ulysses_rows: list[list[int]] = []
        if getattr(self, "_ulysses_hooked", False):
            return
        embed, attn = self._ulysses_layers()
        embed.register_forward_pre_hook(
            lambda _m, args: self._ulysses_rows.append([args[0].shape[0], 0])
        )
        impl_forward = attn.impl.forward

        def forward(layer: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if self._ulysses_rows:
                self._ulysses_rows[-1][1] = query.shape[0]
            return impl_forward(layer, query, *args, **kwargs)

        attn.impl.forward = forward
        self._ulysses_hooked = True

    def ulysses_rows(self) -> list[list[int]]:
        """[tokens embedded, query rows attended] per forward pass."""
        return [list(r) for r in self._ulysses_rows]


def _same_cache(a: Any, b: Any) -> bool:
    """vLLM keeps a layer's cache as a tensor or a one-per-engine list."""
    a = a[0] if isinstance(a, (list, tuple)) else a
    b = b[0] if isinstance(b, (list, tuple)) else b
    return bool(a.numel() > 0 and a.data_ptr() == b.data_ptr())
