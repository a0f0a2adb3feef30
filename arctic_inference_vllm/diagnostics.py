"""Introspection for tests and debugging, through vLLM's public worker
extension hook: start vLLM with
``worker_extension_cls="arctic_inference_vllm.diagnostics.SuffixCacheInspector"``
(or ``SwiftKVInspector``, ``UlyssesInspector``, ``ShiftInspector``) and call
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


class ShiftInspector(UlyssesInspector):
    """Mixed into vLLM's worker class by ``worker_extension_cls``
    (``arctic_inference_vllm.diagnostics.ShiftInspector``): one rank of a
    shift-parallel deployment, its two models and the path of each step."""

    def shift_layout(self) -> dict[str, Any]:
        """Groups and heads of both models on this rank, and whether its SP
        and TP models hold the same query heads (head block ``r`` on rank
        ``r`` in both; checked on the first layer's q rows of a Llama-like
        model, None for others)."""
        import torch
        from vllm.distributed import parallel_state as ps
        from vllm.model_executor.layers.attention.attention import Attention

        from arctic_inference_vllm.ulysses import runtime, shift

        models = self._arctic_shift  # type: ignore[attr-defined]  # the Ulysses worker's
        tp_attn, sp_attn = (
            next(m for m in model.modules() if isinstance(m, Attention))
            for model in (models.tp, models.sp)
        )
        same_q: bool | None = None
        try:
            tp_qkv = models.tp.model.layers[0].self_attn
            sp_qkv = models.sp.model.layers[0].self_attn
        except AttributeError:
            pass
        else:
            rows = tp_qkv.q_size  # this rank's query rows in the TP model
            s = runtime.rank()
            same_q = bool(
                torch.equal(
                    tp_qkv.qkv_proj.weight[:rows], sp_qkv.qkv_proj.weight[s * rows : (s + 1) * rows]
                )
            )
        return {
            "worker": type(self).__name__,
            "rank": ps.get_world_group().rank_in_group,
            "sp": runtime.size(),
            "sp_rank": runtime.rank(),
            "sp_model_tp": [shift.sp_tp_group().world_size, shift.sp_tp_group().rank_in_group],
            "tp_model_tp": [ps.get_tp_group().world_size, ps.get_tp_group().rank_in_group],
            "heads": [sp_attn.num_heads, tp_attn.num_heads],
            "kv_heads": [sp_attn.num_kv_heads, tp_attn.num_kv_heads],
            "same_query_heads": same_q,
            "threshold": models.threshold,
        }

    def shift_record(self) -> None:
        """Start recording each step's path, and which KV cache tensor each
        attention layer's backend gets on each path."""
        from arctic_inference_vllm.ulysses import shift

        shift.record_steps()
        self._shift_writes: dict[str, dict[str, set[int]]] = {"tp": {}, "sp": {}}
        if getattr(self, "_shift_hooked", False):
            return
        layers = self.vllm_config.compilation_config.static_forward_context  # type: ignore[attr-defined]
        for name, layer in layers.items():
            if hasattr(layer, "impl"):
                layer.impl.forward = self._recording(name, layer.impl.forward)
        self._shift_hooked = True

    def _recording(self, name: str, impl_forward: Any) -> Any:
        from arctic_inference_vllm.ulysses import shift

        def forward(
            layer: Any, query: Any, key: Any, value: Any, kv_cache: Any, *a: Any, **k: Any
        ) -> Any:
            path = shift.current_path()
            if path is not None:
                cache = kv_cache[0] if isinstance(kv_cache, (list, tuple)) else kv_cache
                self._shift_writes[path].setdefault(name, set()).add(cache.data_ptr())
            return impl_forward(layer, query, key, value, kv_cache, *a, **k)

        return forward

    def shift_steps(self) -> list[tuple[str, int, int]]:
        """(path, scheduled tokens, requests) of each step since
        :meth:`shift_record`."""
        from arctic_inference_vllm.ulysses import shift

        return shift.recorded_steps()

    def shift_weight_bytes(self) -> dict[str, int]:
        """Bytes of parameters this rank holds for each model (the TP model's
        are shift parallelism's extra memory over Ulysses alone)."""
        models = self._arctic_shift  # type: ignore[attr-defined]
        return {
            path: sum(p.numel() * p.element_size() for p in model.parameters())
            for path, model in (("sp", models.sp), ("tp", models.tp))
        }

    def shift_path_counts(self) -> dict[str, int]:
        """Steps this worker ran on each path since it started."""
        from arctic_inference_vllm.ulysses import shift

        return shift.path_counts()

    def shift_kv_caches(self) -> dict[str, Any]:
        """Per attention layer: the cache tensors its backend got on each path
        (data pointers), and whether the SP model's layer of that name holds
        the TP model's tensor."""
        models = self._arctic_shift  # type: ignore[attr-defined]
        layers = self.vllm_config.compilation_config.static_forward_context  # type: ignore[attr-defined]
        return {
            name: {
                "tp": sorted(self._shift_writes["tp"].get(name, ())),
                "sp": sorted(self._shift_writes["sp"].get(name, ())),
                "bound": _same_cache(layers[name].kv_cache, sp_layer.kv_cache),
                "cache": _first(layers[name].kv_cache).data_ptr(),
            }
            for name, sp_layer in models.sp_layers.items()
            if hasattr(sp_layer, "kv_cache")
        }


def _first(cache: Any) -> Any:
    return cache[0] if isinstance(cache, (list, tuple)) else cache


def _same_cache(a: Any, b: Any) -> bool:
    """vLLM keeps a layer's cache as a tensor or a one-per-engine list."""
    a = a[0] if isinstance(a, (list, tuple)) else a
    b = b[0] if isinstance(b, (list, tuple)) else b
    return bool(a.numel() > 0 and a.data_ptr() == b.data_ptr())
