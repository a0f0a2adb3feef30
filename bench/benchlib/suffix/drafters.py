"""The drafters the replay compares, behind one interface (:class:`Drafter`):
suffix decoding on this core (:class:`SuffixDrafter`), Snowflake's reference
implementation when arctic-inference can be imported
(:class:`ArcticRefDrafter`), and vLLM's n-gram prompt-lookup drafter
(:class:`NgramDrafter`). Each times its own API calls.
"""

from __future__ import annotations

import importlib.metadata
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from arctic_inference_core.suffix import SuffixDecodingCache
from benchlib.suffix.data import Tokens

ARCTIC_PEER_PREFIX = "arctic-inference"  # names the reference peer's replay

NGRAM_MIN_N = 2
NGRAM_MAX_N = 5
NGRAM_MAX_MODEL_LEN = 1 << 30  # never the limiting factor


class Drafter(Protocol):
    """What the replay needs from a speculator; implementations time their API calls."""

    name: str
    speculate_ns: list[int]

    def start(self, req_id: str, prompt: Tokens) -> None: ...

    def propose(self, req_id: str, seq: Tokens, n: int) -> Sequence[int]:
        """Draft after ``seq[:n]`` (prompt + generated so far)."""
        ...

    def commit(self, req_id: str, tokens: Tokens) -> None: ...

    def stop(self, req_id: str) -> None: ...

    def after_request(self, done: int, total: int) -> None: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SpecParams:
    """speculate() knobs besides k; the defaults are the reference protocol."""

    factor: float = 1.0
    offset: float = 0.0
    min_prob: float = 0.1

    def __str__(self) -> str:
        return f"factor {self.factor:g}, offset {self.offset:g}, min prob {self.min_prob:g}"


def suffix_settings(depth: int, k: int, params: SpecParams, context_len: int) -> str:
    """The part of a suffix drafter's name that says how it was run."""
    out = f"depth {depth}, k={k}"
    if context_len != depth:
        out += f", context {context_len}"
    if params != SpecParams():
        out += f", {params}"
    return out


class SuffixDrafter:
    """Suffix decoding through the public SuffixDecodingCache API."""

    def __init__(
        self,
        depth: int,
        k: int,
        params: SpecParams,
        context_len: int,
        snapshot_every: int,
        share: bool = False,
    ) -> None:
        # share: share_active_responses (the response grows in the global tree)
        self.share = share
        self.name = f"ours: suffix {suffix_settings(depth, k, params, context_len)}"
        if share:
            self.name += ", sharing on"
        self.params = params
        self.depth = depth
        self.context_len = context_len
        self.k = k
        self.cache = self.make_cache(depth)
        self.speculate_ns: list[int] = []
        self.update_ns = 0
        self.update_tokens = 0
        self.start_ns = 0
        self.start_tokens = 0
        self.stop_ns = 0
        self.snapshot_every = max(1, snapshot_every)
        self.memory_snapshots: list[dict[str, float]] = []

    def make_cache(self, depth: int) -> Any:
        return SuffixDecodingCache(
            max_tree_depth=depth, max_cached_requests=-1, share_active_responses=self.share
        )

    def start(self, req_id: str, prompt: Tokens) -> None:
        t0 = time.perf_counter_ns()
        self.cache.start_request(req_id, prompt)
        self.start_ns += time.perf_counter_ns() - t0
        self.start_tokens += len(prompt)

    def propose(self, req_id: str, seq: Tokens, n: int) -> Sequence[int]:
        context = seq[max(0, n - self.context_len) : n]
        t0 = time.perf_counter_ns()
        draft = self.cache.speculate(
            req_id,
            context,
            max_spec_tokens=self.k,
            max_spec_factor=self.params.factor,
            max_spec_offset=self.params.offset,
            min_token_prob=self.params.min_prob,
        )
        self.speculate_ns.append(time.perf_counter_ns() - t0)
        return draft.token_ids

    def commit(self, req_id: str, tokens: Tokens) -> None:
        t0 = time.perf_counter_ns()
        self.cache.add_active_response(req_id, tokens)
        self.update_ns += time.perf_counter_ns() - t0
        self.update_tokens += len(tokens)

    def stop(self, req_id: str) -> None:
        t0 = time.perf_counter_ns()
        self.cache.stop_request(req_id)
        self.stop_ns += time.perf_counter_ns() - t0

    def after_request(self, done: int, total: int) -> None:
        if done % self.snapshot_every == 0 or done == total:
            self.memory_snapshots.append(self.memory_snapshot(done))

    def memory_usage(self) -> tuple[int, int]:
        """(bytes held, tokens held) by the cache's trees."""
        return self.cache.memory_bytes(), self.cache.num_cached_tokens()

    def memory_snapshot(self, done: int) -> dict[str, float]:
        mem, tokens = self.memory_usage()
        return {
            "requests_done": done,
            "memory_bytes": mem,
            "cached_tokens": tokens,
            "bytes_per_token": mem / tokens if tokens else float("nan"),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "update_us_per_token": self.update_ns / 1e3 / max(1, self.update_tokens),
            "update_tokens": self.update_tokens,
            "stop_us_per_response_token": self.stop_ns / 1e3 / max(1, self.update_tokens),
            "start_us_per_prompt_token": self.start_ns / 1e3 / max(1, self.start_tokens),
            "start_prompt_tokens": self.start_tokens,
            "memory_snapshots": self.memory_snapshots,
            "final_bytes_per_token": self.memory_snapshots[-1]["bytes_per_token"]
            if self.memory_snapshots
            else float("nan"),
        }


@dataclass(frozen=True)
class ArcticRef:
    """Snowflake's reference implementation, as imported."""

    cache_cls: type
    version: str
    module_file: str


def import_arctic_reference(path: Path | None) -> ArcticRef | None:
    """arctic-inference's SuffixDecodingCache, or None when it cannot be imported.

    Only ``arctic_inference.suffix_decoding`` is imported (the rest of the
    package patches vLLM). ``path`` is put first on sys.path for the import only:
    the package also declares a vLLM plugin entry point, which vLLM must not
    find there when the n-gram peer imports it.
    """
    where = f" from {path}" if path else ""
    if path is not None and not path.is_dir():
        print(f"[arctic] reference unavailable: --arctic-path {path} is not a directory; skipping")
        return None
    saved = list(sys.path)
    if path is not None:
        sys.path.insert(0, str(path))
    try:
        from arctic_inference.suffix_decoding import _C as ref_native
        from arctic_inference.suffix_decoding import SuffixDecodingCache as RefCache
    except Exception as e:  # the reference is optional; any import failure means "skip"
        print(f"[arctic] reference unavailable{where} ({type(e).__name__}: {e}); skipping")
        return None
    finally:
        sys.path[:] = saved
    return ArcticRef(
        RefCache, distribution_version("arctic_inference", path), str(ref_native.__file__)
    )


def distribution_version(name: str, path: Path | None) -> str:
    """Version of the installed distribution ``name``, looked up in ``path``
    when given (else on sys.path)."""
    search = [str(path)] if path is not None else sys.path
    for dist in importlib.metadata.distributions(name=name, path=search):
        return dist.version
    return "(unknown version)"


class ArcticRefDrafter(SuffixDrafter):
    """The reference SuffixDecodingCache, replayed exactly like ours: the same
    calls with the same arguments (its speculate() takes the same keywords;
    use_tree_spec stays False: one path, like ours), timed the same way."""

    def __init__(
        self,
        ref: ArcticRef,
        depth: int,
        k: int,
        params: SpecParams,
        context_len: int,
        snapshot_every: int,
    ) -> None:
        self.ref = ref
        super().__init__(depth, k, params, context_len, snapshot_every)
        self.name = (
            f"{ARCTIC_PEER_PREFIX} {ref.version} suffix (reference), "
            f"{suffix_settings(depth, k, params, context_len)}"
        )
        # It counts no tokens: the replay does. Responses stay in its global
        # tree (max_cached_requests=-1); prompts live in per-request trees.
        self.global_tokens = 0
        self.active_tokens: dict[str, int] = {}

    def make_cache(self, depth: int) -> Any:
        return self.ref.cache_cls(max_tree_depth=depth, max_cached_requests=-1)

    def start(self, req_id: str, prompt: Tokens) -> None:
        super().start(req_id, prompt)
        self.active_tokens[req_id] = len(prompt)

    def commit(self, req_id: str, tokens: Tokens) -> None:
        super().commit(req_id, tokens)
        self.global_tokens += len(tokens)
        self.active_tokens[req_id] += len(tokens)

    def stop(self, req_id: str) -> None:
        super().stop(req_id)
        del self.active_tokens[req_id]

    def memory_usage(self) -> tuple[int, int]:
        """``estimate_memory()`` of all its trees (a debugging method of its
        native SuffixTree, reached through the cache's private attributes)."""
        trees = [self.cache._global_tree, *self.cache._local_trees.values()]
        mem = sum(t.estimate_memory() for t in trees)
        return mem, self.global_tokens + sum(self.active_tokens.values())


NgramFn = Callable[[Tokens, int, int, int, int], Tokens]


def import_vllm_ngram() -> NgramFn | None:
    """vLLM's jitted prompt-lookup matcher, or None when vLLM is unavailable."""
    try:
        from vllm.v1.spec_decode.ngram_proposer import (
            _find_longest_matched_ngram_and_propose_tokens,
        )
    except Exception as e:  # vLLM is optional; any import failure means "skip"
        print(f"[ngram] vLLM n-gram drafter unavailable ({type(e).__name__}: {e}); skipping")
        return None
    return _find_longest_matched_ngram_and_propose_tokens


class NgramDrafter:
    """vLLM's n-gram drafter: the per-request kernel that NgramProposer.propose
    runs (via batch_propose_numba) over each request's prompt + output tokens."""

    def __init__(self, fn: NgramFn, k: int) -> None:
        self.name = f"vLLM ngram n={NGRAM_MIN_N}..{NGRAM_MAX_N}, k={k}"
        self.fn = fn
        self.k = k
        self.speculate_ns: list[int] = []
        self._warm_up()

    def _warm_up(self) -> None:
        """Trigger numba compilation for the array type used in the replay."""
        seq = np.array([1, 2, 3, 1, 2, 3, 4, 5], dtype=np.int32)
        self.fn(seq[:6], NGRAM_MIN_N, NGRAM_MAX_N, NGRAM_MAX_MODEL_LEN, self.k)

    def start(self, req_id: str, prompt: Tokens) -> None:
        pass

    def propose(self, req_id: str, seq: Tokens, n: int) -> Sequence[int]:
        context = seq[:n]
        t0 = time.perf_counter_ns()
        draft = self.fn(context, NGRAM_MIN_N, NGRAM_MAX_N, NGRAM_MAX_MODEL_LEN, self.k)
        self.speculate_ns.append(time.perf_counter_ns() - t0)
        return draft.tolist()

    def commit(self, req_id: str, tokens: Tokens) -> None:
        pass

    def stop(self, req_id: str) -> None:
        pass

    def after_request(self, done: int, total: int) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}
