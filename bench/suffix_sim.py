"""Model-free simulator and micro-benchmark for suffix decoding.

What it measures
----------------
Replays recorded agentic coding requests (JSON lines with ``id``, ``family``,
``prompt``, ``response``) as a single-stream server running greedy decoding
with speculation, without any model: the recorded response *is* the greedy
output, so a draft token is accepted exactly when it equals the next true
response token.

For every request, in file order, with one global
:class:`~arctic_inference_core.suffix.SuffixDecodingCache` (earlier responses
stay cached, so cross-request repetition counts):

1. ``start_request(id, prompt)``;
2. each step drafts from the last ``depth`` tokens of prompt + generated so far
   (``max_spec_tokens=k``, ``max_spec_factor=1.0``, ``min_token_prob=0.1``;
   see ``--spec-factor``, ``--spec-offset``, ``--min-token-prob``),
   accepts the longest draft prefix that matches the true continuation, then
   appends the accepted tokens + 1 true token (``add_active_response``); a step
   thus yields ``accepted + 1`` tokens, capped at the end of the response;
3. ``stop_request(id)``.

Reported (Markdown table in ``<out-dir>/suffix_sim.md``, raw numbers in
``<out-dir>/suffix_sim.json``):

* mean tokens per step (= response tokens / steps) per family and overall,
  for suffix decoding at ``--depth`` (and ``--extra-depths``), and for vLLM's
  n-gram prompt-lookup drafter (min n=2, max n=5, same k) and for Snowflake's
  reference implementation (arctic-inference's ``SuffixDecodingCache``, at
  ``--depth``, same k, factor, offset and min prob, if importable; see
  ``--arctic-path``) replayed the same way, next to the published reference
  numbers; plus per-request head-to-heads against those peers. The n-gram peer
  calls
  ``vllm.v1.spec_decode.ngram_proposer._find_longest_matched_ngram_and_propose_tokens``
  (the per-request kernel NgramProposer runs) on prompt + generated tokens, so
  no VllmConfig is needed;
* speculate cost per call (p50/p99 us, ``perf_counter_ns`` around each call at
  the Python API), for suffix decoding (ours and the reference) and for vLLM's
  jitted n-gram matcher (after JIT warmup);
* update cost: ``add_active_response`` time per added token,
  ``stop_request`` time per response token (ours moves a finished response
  into the global tree there; the reference does it in
  ``add_active_response``), and ``start_request`` time per prompt token;
* bytes per cached token (``memory_bytes() / num_cached_tokens()``) at the
  quartiles of the run and at the end; for the reference,
  ``estimate_memory()`` of its trees over the tokens the replay put in them;
* ``speculate_batch`` cost per engine step at several batch sizes, against the
  loop an engine would otherwise run (per request ``add_active_response`` +
  ``speculate``), each step appending to every request either the tokens its
  previous draft earned (accepted + 1) or a single token.

The garbage collector is disabled inside timed loops (collected before). The
git commit and a hash of the native module are recorded with the results, as
the library is under development.

How to run
----------
::

    . .venv/bin/activate
    python bench/suffix_sim.py                       # all traces, ~1-2 minutes
    python bench/suffix_sim.py --limit 100 --no-ngram  # quick run
    python bench/suffix_sim.py --traces path/to/requests.jsonl --depth 32 --k 16
    python bench/suffix_sim.py --arctic-path DIR     # reference from a --target install

The reference peer is optional: arctic-inference (built from its sdist, e.g.
``pip wheel --no-deps --no-build-isolation arctic-inference==0.3.0`` then
``pip install --no-deps --target DIR <wheel>``) is imported from ``DIR`` or,
without ``--arctic-path``, from the environment; if that fails the peer is
skipped with a note. Only ``arctic_inference.suffix_decoding`` is imported.

Tokenization uses the tekken tokenizer shipped inside ``mistral_common``
(nothing is downloaded); tokenized traces are cached under ``--out-dir``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

# numpy's OpenBLAS pool otherwise spins on the second core between calls and
# skews every timing on a 2-core machine; this benchmark does no linear algebra.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from arctic_inference_core.suffix import SuffixDecodingCache

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRACES = REPO_ROOT.parent / "shared" / "bench-data" / "agentic-requests.jsonl"
DEFAULT_OUT_DIR = REPO_ROOT / "bench" / "results"
FAMILIES = ("edit_file", "edit_diff", "new_file")

# Published mean tokens/step on these traces, measured the same way.
REFERENCE: dict[str, dict[str, float]] = {
    "arctic-inference suffix, depth 64 (published)": {
        "edit_file": 17.63,
        "edit_diff": 3.13,
        "new_file": 1.58,
        "all": 9.14,
    },
    "vLLM ngram n=2..5 (published)": {
        "edit_file": 18.01,
        "edit_diff": 2.30,
        "new_file": 1.23,
        "all": 7.73,
    },
}

# Targets for our implementation.
TARGET_MEAN_TOKENS_PER_STEP = 11.0
TARGET_SPECULATE_P50_US = 2.0
TARGET_UPDATE_US_PER_TOKEN = 0.5
TARGET_BYTES_PER_TOKEN = 100.0
TARGET_BATCH256_MS_PER_STEP = 1.0

ARCTIC_PEER_PREFIX = "arctic-inference"  # names the reference peer's replay

NGRAM_MIN_N = 2
NGRAM_MAX_N = 5
NGRAM_MAX_MODEL_LEN = 1 << 30  # never the limiting factor

Tokens = npt.NDArray[np.int32]


# --------------------------------------------------------------------------- data


@dataclass
class Trace:
    """One recorded request, tokenized."""

    id: str
    family: str
    prompt: Tokens
    response: Tokens


def find_tekken_file() -> Path:
    """Newest tekken tokenizer file shipped inside the mistral_common package."""
    import mistral_common

    data_dir = Path(mistral_common.__file__).parent / "data"
    files = sorted(data_dir.glob("tekken*.json"))
    if not files:
        raise FileNotFoundError(f"no tekken*.json tokenizer file in {data_dir}")
    return files[-1]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _token_cache_path(traces: Path, tokenizer: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(
        (_file_digest(traces) + _file_digest(tokenizer) + tokenizer.name).encode()
    ).hexdigest()[:16]
    return cache_dir / f"tokens-{traces.stem}-{tokenizer.stem}-{key}.npz"


def _flatten(arrays: Sequence[Tokens]) -> tuple[Tokens, npt.NDArray[np.int64]]:
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    return flat.astype(np.int32), offsets


def _split(flat: Tokens, offsets: npt.NDArray[np.int64]) -> list[Tokens]:
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def tokenize_traces(traces: Path, tokenizer: Path) -> list[Trace]:
    """Read the JSON lines and tokenize prompts and responses (no BOS/EOS)."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    tok = Tekkenizer.from_file(str(tokenizer))

    def encode(text: str) -> Tokens:
        return np.asarray(tok.encode(text, bos=False, eos=False), dtype=np.int32)

    out = []
    with traces.open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.append(
                    Trace(row["id"], row["family"], encode(row["prompt"]), encode(row["response"]))
                )
    return out


def save_token_cache(path: Path, traces: Sequence[Trace]) -> None:
    prompt_flat, prompt_off = _flatten([t.prompt for t in traces])
    resp_flat, resp_off = _flatten([t.response for t in traces])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        ids=np.array([t.id for t in traces]),
        families=np.array([t.family for t in traces]),
        prompt_flat=prompt_flat,
        prompt_off=prompt_off,
        resp_flat=resp_flat,
        resp_off=resp_off,
    )


def load_token_cache(path: Path) -> list[Trace]:
    with np.load(path, allow_pickle=False) as z:
        prompts = _split(z["prompt_flat"], z["prompt_off"])
        responses = _split(z["resp_flat"], z["resp_off"])
        return [
            Trace(str(i), str(f), p, r)
            for i, f, p, r in zip(z["ids"], z["families"], prompts, responses)
        ]


def synthetic_traces(out_dir: Path, n: int, seed: int = 0) -> Path:
    """Write (once) and return a synthetic trace file made by make_traces.py."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_traces import generate

    path = out_dir / f"synthetic-requests-n{n}-s{seed}.jsonl"
    if not path.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for row in generate(n, seed):
                f.write(json.dumps(row) + "\n")
    return path


def load_traces(traces: Path, tokenizer: Path, cache_dir: Path) -> list[Trace]:
    """Tokenized traces, from the on-disk cache when it matches the inputs."""
    cache = _token_cache_path(traces, tokenizer, cache_dir)
    if cache.exists():
        return load_token_cache(cache)
    out = tokenize_traces(traces, tokenizer)
    save_token_cache(cache, out)
    return out


# --------------------------------------------------------------------------- timing


def percentile_us(samples_ns: Sequence[int], q: float) -> float:
    return (
        float(np.percentile(np.asarray(samples_ns, dtype=np.int64), q)) / 1e3
        if samples_ns
        else float("nan")
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage, then keep the collector off for a timed region."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- drafters


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
        self, depth: int, k: int, params: SpecParams, context_len: int, snapshot_every: int
    ) -> None:
        self.name = f"ours: suffix {suffix_settings(depth, k, params, context_len)}"
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
        return SuffixDecodingCache(max_tree_depth=depth, max_cached_requests=-1)

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


# --------------------------------------------------------------------------- replay


def accepted_prefix(draft: Sequence[int], truth: Sequence[int]) -> int:
    """Length of the longest prefix of ``draft`` equal to ``truth``."""
    n = 0
    for d, t in zip(draft, truth):
        if d != t:
            break
        n += 1
    return n


@dataclass
class FamilyStats:
    tokens: int = 0
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    requests: int = 0

    def add(self, other: FamilyStats) -> None:
        self.tokens += other.tokens
        self.steps += other.steps
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.requests += other.requests

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        d["tokens_per_step"] = self.tokens / self.steps if self.steps else float("nan")
        d["acceptance_rate"] = self.accepted / self.drafted if self.drafted else float("nan")
        return d


@dataclass
class ReplayResult:
    name: str
    families: dict[str, FamilyStats] = field(default_factory=dict)
    accepted_hist: Counter = field(default_factory=Counter)
    request_steps: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def overall(self) -> FamilyStats:
        total = FamilyStats()
        for stats in self.families.values():
            total.add(stats)
        return total


def replay_request(drafter: Drafter, trace: Trace, hist: Counter) -> FamilyStats:
    """Greedy-decode one request with speculation; see the module docstring."""
    prompt_len, resp_len = len(trace.prompt), len(trace.response)
    seq = np.concatenate([trace.prompt, trace.response]).astype(np.int32)
    truth = trace.response.tolist()
    stats = FamilyStats(tokens=resp_len, requests=1)
    drafter.start(trace.id, trace.prompt)
    done = 0
    while done < resp_len:
        draft = drafter.propose(trace.id, seq, prompt_len + done)
        acc = accepted_prefix(draft, truth[done : done + len(draft)])
        advance = min(acc + 1, resp_len - done)
        drafter.commit(trace.id, seq[prompt_len + done : prompt_len + done + advance])
        hist[acc] += 1
        stats.steps += 1
        stats.drafted += len(draft)
        stats.accepted += acc
        done += advance
    drafter.stop(trace.id)
    return stats


def run_replay(drafter: Drafter, traces: Sequence[Trace]) -> ReplayResult:
    """Replay every trace in order through one drafter (one global cache)."""
    result = ReplayResult(drafter.name)
    t0 = time.perf_counter()
    with gc_paused():
        for i, trace in enumerate(traces, 1):
            stats = replay_request(drafter, trace, result.accepted_hist)
            result.families.setdefault(trace.family, FamilyStats()).add(stats)
            result.request_steps[trace.id] = stats.steps
            drafter.after_request(i, len(traces))
    result.seconds = time.perf_counter() - t0
    return result


def replay_summary(result: ReplayResult, drafter: Drafter) -> dict[str, Any]:
    ns = drafter.speculate_ns
    hist = result.accepted_hist
    return {
        "name": result.name,
        "seconds": result.seconds,
        "families": {f: s.to_dict() for f, s in sorted(result.families.items())},
        "all": result.overall().to_dict(),
        "accepted_len_hist": {str(k): hist[k] for k in sorted(hist)},
        "speculate_calls": len(ns),
        "speculate_us": {
            "p50": percentile_us(ns, 50),
            "p90": percentile_us(ns, 90),
            "p99": percentile_us(ns, 99),
            "mean": float(np.mean(ns)) / 1e3 if ns else float("nan"),
        },
        **drafter.summary(),
        "request_steps": result.request_steps,
    }


# --------------------------------------------------------------------------- batch


@dataclass
class BatchRequest:
    req_id: str
    response: list[int]
    done: int = 0
    accept: bool = True  # advance by accepted draft tokens + 1, else by 1 token
    pending: list[int] = field(default_factory=list)  # tokens to append next step


def warm_cache(cache: SuffixDecodingCache, traces: Sequence[Trace]) -> tuple[int, int]:
    """Put the responses of ``traces`` into the global tree.

    Returns the ns spent in add_active_response (one call per whole response)
    and the tokens it added: the per-token update cost without per-call overhead.
    """
    ns = tokens = 0
    for t in traces:
        cache.start_request(t.id, t.prompt)
        t0 = time.perf_counter_ns()
        cache.add_active_response(t.id, t.response)
        ns += time.perf_counter_ns() - t0
        tokens += len(t.response)
        cache.stop_request(t.id)
    return ns, tokens


def start_batch(
    cache: SuffixDecodingCache, traces: Sequence[Trace], size: int, accept: bool
) -> list[BatchRequest]:
    """Start ``size`` requests on the prompts of ``traces`` (cycled if too few).

    As after prefill, each request's first pending token is its first response token.
    """
    reqs = []
    for i in range(size):
        t = traces[i % len(traces)]
        req = BatchRequest(f"batch-{i}", t.response.tolist(), accept=accept)
        cache.start_request(req.req_id, t.prompt)
        advance_request(req, [])
        reqs.append(req)
    return reqs


def advance_request(req: BatchRequest, draft: Sequence[int]) -> None:
    """Verify ``draft``: next step appends accepted tokens + 1 true token
    (only the 1 true token when ``req.accept`` is off; [] once done)."""
    acc = (
        accepted_prefix(draft, req.response[req.done : req.done + len(draft)]) if req.accept else 0
    )
    req.pending = req.response[req.done : req.done + acc + 1]
    req.done += len(req.pending)


def step_batch(cache: SuffixDecodingCache, reqs: Sequence[BatchRequest], k: int) -> list[list[int]]:
    """One engine step through the batch entry point."""
    drafts = cache.speculate_batch(
        [r.req_id for r in reqs],
        new_token_ids=[r.pending for r in reqs],
        max_spec_tokens=k,
        max_spec_factor=1.0,
        min_token_prob=0.1,
    )
    return drafts.token_id_lists()


def step_loop(cache: SuffixDecodingCache, reqs: Sequence[BatchRequest], k: int) -> list[list[int]]:
    """One engine step as per-request add_active_response + speculate calls."""
    out = []
    for r in reqs:
        if r.pending:
            cache.add_active_response(r.req_id, r.pending)
        d = cache.speculate(
            r.req_id, None, max_spec_tokens=k, max_spec_factor=1.0, min_token_prob=0.1
        )
        out.append(d.token_ids)
    return out


StepFn = Callable[[SuffixDecodingCache, Sequence[BatchRequest], int], list[list[int]]]


@dataclass
class Engine:
    """A warmed cache with ``size`` running requests, stepped by one step function."""

    step: StepFn
    cache: SuffixDecodingCache
    reqs: list[BatchRequest]
    step_ns: list[int] = field(default_factory=list)
    drafts: list[list[list[int]]] = field(default_factory=list)  # per step, per request
    idle_request_steps: int = 0  # request-steps with an exhausted response
    appended_tokens: int = 0
    warm_ns: int = 0
    warm_tokens: int = 0

    def run_step(self, k: int) -> None:
        self.idle_request_steps += sum(1 for r in self.reqs if not r.pending)
        self.appended_tokens += sum(len(r.pending) for r in self.reqs)
        t0 = time.perf_counter_ns()
        drafts = self.step(self.cache, self.reqs, k)
        self.step_ns.append(time.perf_counter_ns() - t0)
        for r, d in zip(self.reqs, drafts):
            advance_request(r, d)
        self.drafts.append(drafts)


def make_engine(
    step: StepFn, traces: Sequence[Trace], size: int, depth: int, accept: bool, threads: int = 1
) -> Engine:
    """Warm a fresh cache with traces[size:], then start size requests on traces[:size]."""
    cache = SuffixDecodingCache(max_tree_depth=depth, max_cached_requests=-1, num_threads=threads)
    with gc_paused():
        warm_ns, warm_tokens = warm_cache(cache, traces[size:])
    reqs = start_batch(cache, traces[:size], size, accept)
    return Engine(step, cache, reqs, warm_ns=warm_ns, warm_tokens=warm_tokens)


def step_stats(step_ns: Sequence[int], size: int) -> dict[str, float]:
    p50_ms, p99_ms = percentile_us(step_ns, 50) / 1e3, percentile_us(step_ns, 99) / 1e3
    return {
        "p50_ms_per_step": p50_ms,
        "p99_ms_per_step": p99_ms,
        "p50_us_per_request": p50_ms * 1e3 / size,
        "p99_us_per_request": p99_ms * 1e3 / size,
    }


def bench_batch(
    traces: Sequence[Trace],
    sizes: Sequence[int],
    advances: Sequence[str],
    depth: int,
    k: int,
    steps: int,
    thread_counts: Sequence[int] = (1,),
) -> list[dict[str, Any]]:
    """speculate_batch (with each thread count) vs. the per-request loop, at each batch size.

    Two identically warmed caches serve the same requests; their steps
    alternate. Each step appends to each request the tokens its previous
    draft earned (advance "accepted") or its next true token (advance "one").
    """
    rows = []
    for advance, size, threads in (
        (a, b, t) for a in advances for b in sizes for t in thread_counts
    ):
        batch = make_engine(step_batch, traces, size, depth, advance == "accepted", threads)
        loop = make_engine(step_loop, traces, size, depth, advance == "accepted")
        with gc_paused():
            for _ in range(steps):  # alternate, so drift hits both alike
                batch.run_step(k)
                loop.run_step(k)
        warm_ns, warm_tokens = batch.warm_ns + loop.warm_ns, batch.warm_tokens + loop.warm_tokens
        rows.append(
            {
                "batch_size": size,
                "threads": threads,
                "advance": advance,
                "steps": steps,
                "mean_new_tokens": batch.appended_tokens / (size * steps),
                "warm_requests": max(0, len(traces) - size),
                "bulk_add_us_per_token": warm_ns / 1e3 / warm_tokens
                if warm_tokens
                else float("nan"),
                "idle_request_step_fraction": batch.idle_request_steps / (size * steps),
                "drafts_identical": batch.drafts == loop.drafts,
                "mean_draft_len": float(np.mean([len(d) for s in batch.drafts for d in s])),
                "speculate_batch": step_stats(batch.step_ns, size),
                "loop": step_stats(loop.step_ns, size),
            }
        )
        print(
            f"[batch] advance={advance} B={size} threads={threads}: speculate_batch p50 {rows[-1]['speculate_batch']['p50_ms_per_step']:.3f} ms/step, "
            f"loop p50 {rows[-1]['loop']['p50_ms_per_step']:.3f} ms/step"
        )
    return rows


# --------------------------------------------------------------------------- comparison


def head_to_head(
    ours: dict[str, Any], peer: dict[str, Any], traces: Sequence[Trace]
) -> dict[str, Any]:
    """Per family: on how many requests each method needs fewer steps, and the
    requests where ``ours`` loses the most steps to ``peer``."""
    out: dict[str, Any] = {}
    for family in sorted({t.family for t in traces}):
        diffs = [
            (ours["request_steps"][t.id] - peer["request_steps"][t.id], t.id)
            for t in traces
            if t.family == family
        ]
        out[family] = {
            "requests": len(diffs),
            "ours_fewer_steps": sum(1 for d, _ in diffs if d < 0),
            "equal": sum(1 for d, _ in diffs if d == 0),
            "ours_more_steps": sum(1 for d, _ in diffs if d > 0),
            "steps_lost_where_worse": sum(d for d, _ in diffs if d > 0),
            "steps_won_where_better": -sum(d for d, _ in diffs if d < 0),
            "worst": [
                {
                    "id": i,
                    "ours_steps": ours["request_steps"][i],
                    "peer_steps": peer["request_steps"][i],
                }
                for d, i in sorted(diffs, reverse=True)[:3]
                if d > 0
            ],
        }
    return {"ours": ours["name"], "peer": peer["name"], "families": out}


# --------------------------------------------------------------------------- report


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"  # x != x: NaN


def tokens_table(
    replays: Sequence[dict[str, Any]], published: dict[str, dict[str, float]]
) -> list[str]:
    lines = [
        "| method | " + " | ".join(FAMILIES) + " | all |",
        "|---|" + "---:|" * (len(FAMILIES) + 1),
    ]
    for r in replays:
        fams = r["families"]
        cells = [fmt(fams[f]["tokens_per_step"]) if f in fams else "n/a" for f in FAMILIES]
        lines.append(
            f"| {r['name']} | " + " | ".join(cells) + f" | {fmt(r['all']['tokens_per_step'])} |"
        )
    for name, ref in published.items():
        cells = [fmt(ref[f]) for f in FAMILIES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fmt(ref['all'])} |")
    return lines


def acceptance_table(replays: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| method | steps | mean draft len | mean accepted | acceptance rate | steps with 0 accepted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in replays:
        a = r["all"]
        zero = r["accepted_len_hist"].get("0", 0) / max(1, a["steps"])
        lines.append(
            f"| {r['name']} | {a['steps']} | {fmt(a['drafted'] / max(1, a['steps']))} | "
            f"{fmt(a['accepted'] / max(1, a['steps']))} | {fmt(a['acceptance_rate'])} | {fmt(100 * zero, 1)}% |"
        )
    return lines


def cost_table(replays: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| method | speculate calls | p50 us | p90 us | p99 us | mean us | update us/token | "
        "stop_request us/response token | start_request us/prompt token | bytes/cached token (end) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in replays:
        s = r["speculate_us"]
        lines.append(
            f"| {r['name']} | {r['speculate_calls']} | {fmt(s['p50'])} | {fmt(s['p90'])} | {fmt(s['p99'])} | "
            f"{fmt(s['mean'])} | {fmt(r.get('update_us_per_token', float('nan')), 3)} | "
            f"{fmt(r.get('stop_us_per_response_token', float('nan')), 3)} | "
            f"{fmt(r.get('start_us_per_prompt_token', float('nan')), 3)} | "
            f"{fmt(r.get('final_bytes_per_token', float('nan')), 1)} |"
        )
    return lines


def memory_table(replay: dict[str, Any]) -> list[str]:
    lines = [
        "| requests done | cached tokens | memory MiB | bytes/token |",
        "|---:|---:|---:|---:|",
    ]
    for s in replay["memory_snapshots"]:
        lines.append(
            f"| {s['requests_done']} | {s['cached_tokens']} | {fmt(s['memory_bytes'] / 2**20)} | "
            f"{fmt(s['bytes_per_token'], 1)} |"
        )
    return lines


def memory_replays(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The main configuration and the reference, which track memory."""
    main, *rest = report["replays"]
    return [main] + [r for r in rest if r["name"].startswith(ARCTIC_PEER_PREFIX)]


def memory_section(replay: dict[str, Any]) -> list[str]:
    lines = ["", f"### Memory during the run ({replay['name']}, max_cached_requests=-1)", ""]
    if replay["name"].startswith(ARCTIC_PEER_PREFIX):
        lines += [
            "Its own `estimate_memory()`, which counts each slot of its stored token "
            "sequences' capacity as `sizeof(std::vector<int32_t>)` (24 bytes on x86-64) rather "
            "than 4 bytes: it overstates by 20 bytes per slot, 20 to 40 bytes per cached token.",
            "",
        ]
    return lines + memory_table(replay)


def batch_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| advance | B | threads | new tokens/req | speculate_batch p50 ms/step | p99 ms/step | p50 us/req | p99 us/req | "
        "loop p50 ms/step | loop p99 ms/step | loop p50 us/req | speedup (p50) | mean draft len | idle req-steps | "
        "drafts identical | bulk add us/token |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for r in rows:
        b, loop = r["speculate_batch"], r["loop"]
        speedup = (
            loop["p50_ms_per_step"] / b["p50_ms_per_step"] if b["p50_ms_per_step"] else float("nan")
        )
        lines.append(
            f"| {r['advance']} | {r['batch_size']} | {r.get('threads', 1)} | {fmt(r['mean_new_tokens'])} | {fmt(b['p50_ms_per_step'], 3)} | {fmt(b['p99_ms_per_step'], 3)} | "
            f"{fmt(b['p50_us_per_request'])} | {fmt(b['p99_us_per_request'])} | "
            f"{fmt(loop['p50_ms_per_step'], 3)} | {fmt(loop['p99_ms_per_step'], 3)} | {fmt(loop['p50_us_per_request'])} | "
            f"{fmt(speedup, 1)}x | {fmt(r['mean_draft_len'])} | {fmt(100 * r['idle_request_step_fraction'], 0)}% | "
            f"{'yes' if r['drafts_identical'] else 'NO'} | {fmt(r['bulk_add_us_per_token'], 3)} |"
        )
    return lines


def target_checks(report: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, measured) for each project target, on the main configuration."""
    main = report["replays"][0]
    total_update = main["update_us_per_token"] + main.get("stop_us_per_response_token", 0.0)
    ref = next(iter(REFERENCE.values()))
    checks = [
        (
            f"overall tokens/step >= {TARGET_MEAN_TOKENS_PER_STEP}",
            main["all"]["tokens_per_step"] >= TARGET_MEAN_TOKENS_PER_STEP,
            fmt(main["all"]["tokens_per_step"]),
        )
    ]
    for f in FAMILIES:
        if f in main["families"] and report["reference"]:
            v = main["families"][f]["tokens_per_step"]
            checks.append((f"{f} tokens/step >= arctic reference {ref[f]}", v >= ref[f], fmt(v)))
    checks += [
        (
            f"speculate p50 <= {TARGET_SPECULATE_P50_US} us",
            main["speculate_us"]["p50"] <= TARGET_SPECULATE_P50_US,
            fmt(main["speculate_us"]["p50"]),
        ),
        (
            # Appending to the request (add_active_response) plus moving the
            # response into the global tree (stop_request), per response token.
            f"update (add + stop) <= {TARGET_UPDATE_US_PER_TOKEN} us/token",
            total_update <= TARGET_UPDATE_US_PER_TOKEN,
            fmt(total_update, 3),
        ),
        (
            f"<= {TARGET_BYTES_PER_TOKEN:.0f} bytes/cached token",
            main["final_bytes_per_token"] <= TARGET_BYTES_PER_TOKEN,
            fmt(main["final_bytes_per_token"], 1),
        ),
    ]
    for row in report["batch"]:
        if row["batch_size"] == 256:
            p50 = row["speculate_batch"]["p50_ms_per_step"]
            checks.append(
                (
                    f"batch 256 <= {TARGET_BATCH256_MS_PER_STEP} ms/step "
                    f"(p50, advance {row['advance']}, {row.get('threads', 1)} thread(s))",
                    p50 <= TARGET_BATCH256_MS_PER_STEP,
                    fmt(p50, 3),
                )
            )
    return checks


def head_to_head_table(h2h: dict[str, Any]) -> list[str]:
    lines = [
        f"Per request, {h2h['ours']} vs. {h2h['peer']} (steps to finish the response):",
        "",
        "| family | requests | ours fewer steps | equal | ours more steps | steps won | steps lost | worst requests (ours/peer steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for family, r in h2h["families"].items():
        worst = ", ".join(f"{w['id']} ({w['ours_steps']}/{w['peer_steps']})" for w in r["worst"])
        lines.append(
            f"| {family} | {r['requests']} | {r['ours_fewer_steps']} | {r['equal']} | {r['ours_more_steps']} | "
            f"{r['steps_won_where_better']} | {r['steps_lost_where_worse']} | {worst} |"
        )
    return lines


def reference_line(ref: dict[str, Any] | None) -> str:
    if ref is None:
        return "not run (--no-arctic, or arctic-inference could not be imported; see --arctic-path)"
    return f"arctic-inference {ref['version']}, native module `{ref['module_file']}`"


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    out = [
        "# Suffix decoding simulation",
        "",
        f"Traces: `{meta['traces']}` ({meta['num_traces']} requests; "
        + ", ".join(f"{f}: {n}" for f, n in meta["family_counts"].items())
        + f"), tokenizer `{meta['tokenizer']}`, k={meta['k']}, context={meta['context_len']} tokens, "
        f"max_spec_factor={meta['spec_params']['factor']:g}, max_spec_offset={meta['spec_params']['offset']:g}, "
        f"min_token_prob={meta['spec_params']['min_prob']:g} (batch section: 1, 0, 0.1).",
        f"Command: `{meta['command']}`; total {meta['total_seconds']:.1f} s on {meta['machine']}; "
        f"library at commit {meta['library_commit']}.",
        f"Reference peer: {reference_line(meta['arctic_reference'])}.",
        "",
        "## Mean tokens per step",
        "",
        *tokens_table(report["replays"], report["reference"]),
        "",
        *acceptance_table(report["replays"]),
        "",
        *(line for h2h in report["head_to_head"] for line in head_to_head_table(h2h) + [""]),
        "## Costs (single stream, Python API)",
        "",
        *cost_table(report["replays"]),
        *(line for r in memory_replays(report) for line in memory_section(r)),
    ]
    if report["batch"]:
        out += [
            "",
            f"## Batch entry point (depth {meta['depth']}, k={meta['k']})",
            "",
            "`speculate_batch(ids, new_token_ids=[accepted + 1 true tokens per request])` vs. the loop "
            "`add_active_response` + `speculate(ctx=None)` per request; cache warmed with the other "
            "traces' responses. Idle req-steps: requests whose response had ended (nothing appended, "
            "still drafted). Bulk add: `add_active_response` of whole responses while warming (per-token cost without "
            "per-call overhead).",
            "",
            *batch_table(report["batch"]),
        ]
    out += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    out += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, ok, m in target_checks(report)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def library_version() -> str:
    """Git commit of the checkout (with a dirty flag) and a hash of the native
    module, as the library is under development."""
    import subprocess

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    from arctic_inference_core import _C

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git(
        "status", "--porcelain", "--untracked-files=no", "--", "cpp", "arctic_inference_core"
    )
    native = hashlib.sha256(Path(_C.__file__).read_bytes()).hexdigest()[:12]
    return commit + (" + uncommitted changes" if dirty else "") + f", _C sha256 {native}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--traces",
        type=Path,
        default=DEFAULT_TRACES,
        help=f"JSON lines trace file (default: {DEFAULT_TRACES}, else synthetic traces)",
    )
    p.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="num_threads of the cache in the batch section (default: 1 2)",
    )
    p.add_argument(
        "--synthetic-n",
        type=int,
        default=300,
        help="number of synthetic traces when the default trace file is absent (default: 300)",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tekken .json file (default: newest in mistral_common/data)",
    )
    p.add_argument(
        "--depth", type=int, default=64, help="max_tree_depth and context length (default: 64)"
    )
    p.add_argument(
        "--extra-depths",
        type=int,
        nargs="*",
        default=[24],
        help="more depths to replay (default: 24)",
    )
    p.add_argument(
        "--context-len",
        type=int,
        default=None,
        help="context tokens passed to speculate (default: each run's depth)",
    )
    p.add_argument("--spec-factor", type=float, default=1.0, help="max_spec_factor (default: 1.0)")
    p.add_argument("--spec-offset", type=float, default=0.0, help="max_spec_offset (default: 0.0)")
    p.add_argument(
        "--min-token-prob", type=float, default=0.1, help="min_token_prob (default: 0.1)"
    )
    p.add_argument(
        "--k", type=int, default=32, help="max_spec_tokens, also the n-gram k (default: 32)"
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N traces")
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[1, 16, 64, 256],
        help="(default: 1 16 64 256; none to skip)",
    )
    p.add_argument(
        "--batch-advance",
        nargs="*",
        choices=("accepted", "one"),
        default=["accepted", "one"],
        help="tokens appended per request-step: accepted draft + 1, or one (default: both)",
    )
    p.add_argument(
        "--batch-steps", type=int, default=50, help="engine steps per batch size (default: 50)"
    )
    p.add_argument("--no-ngram", action="store_true", help="skip the vLLM n-gram peer")
    p.add_argument(
        "--arctic-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory to put first on sys.path to import arctic-inference, the reference "
        "peer (default: import it from the environment; skipped with a note if that fails)",
    )
    p.add_argument(
        "--no-arctic", action="store_true", help="skip the arctic-inference reference peer"
    )
    p.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT_DIR, help=f"(default: {DEFAULT_OUT_DIR})"
    )
    return p.parse_args(argv)


def replay_suffix(
    traces: Sequence[Trace], depth: int, k: int, params: SpecParams, context_len: int | None
) -> dict[str, Any]:
    snapshot_every = max(1, len(traces) // 4)
    drafter = SuffixDrafter(depth, k, params, context_len or depth, snapshot_every)
    summary = replay_summary(run_replay(drafter, traces), drafter)
    print(
        f"[replay] {drafter.name}: {fmt(summary['all']['tokens_per_step'])} tokens/step in {summary['seconds']:.1f} s"
    )
    return summary


def replay_arctic(
    traces: Sequence[Trace],
    ref: ArcticRef,
    depth: int,
    k: int,
    params: SpecParams,
    context_len: int | None,
) -> dict[str, Any]:
    snapshot_every = max(1, len(traces) // 4)
    drafter = ArcticRefDrafter(ref, depth, k, params, context_len or depth, snapshot_every)
    summary = replay_summary(run_replay(drafter, traces), drafter)
    print(
        f"[replay] {drafter.name}: {fmt(summary['all']['tokens_per_step'])} tokens/step in {summary['seconds']:.1f} s"
    )
    return summary


def replay_ngram(traces: Sequence[Trace], k: int) -> dict[str, Any] | None:
    t0 = time.perf_counter()
    fn = import_vllm_ngram()
    if fn is None:
        return None
    drafter = NgramDrafter(fn, k)
    setup = time.perf_counter() - t0
    summary = replay_summary(run_replay(drafter, traces), drafter)
    summary["import_and_jit_seconds"] = setup
    print(
        f"[replay] {drafter.name}: {fmt(summary['all']['tokens_per_step'])} tokens/step in {summary['seconds']:.1f} s"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    synthetic = False
    if not args.traces.is_file():
        if args.traces != DEFAULT_TRACES:
            print(
                f"error: trace file {args.traces} not found; pass --traces PATH (JSON lines with "
                "id, family, prompt, response)",
                file=sys.stderr,
            )
            return 2
        args.traces = synthetic_traces(args.out_dir, args.synthetic_n)
        synthetic = True
        print(
            f"[data] {DEFAULT_TRACES} not found: using {args.synthetic_n} synthetic traces "
            f"from the Python standard library ({args.traces}); published numbers do not apply"
        )
    tokenizer = args.tokenizer or find_tekken_file()
    traces = load_traces(args.traces, tokenizer, args.out_dir)[: args.limit]
    if not traces:
        print("error: no traces to replay", file=sys.stderr)
        return 2
    if len({t.id for t in traces}) != len(traces):
        print("error: trace ids must be unique (they are used as request ids)", file=sys.stderr)
        return 2
    print(
        f"[data] {len(traces)} traces, {sum(len(t.response) for t in traces)} response tokens "
        f"({time.perf_counter() - t_start:.1f} s to load)"
    )

    params = SpecParams(args.spec_factor, args.spec_offset, args.min_token_prob)
    replays = [replay_suffix(traces, args.depth, args.k, params, args.context_len)]
    replays += [
        replay_suffix(traces, d, args.k, params, args.context_len)
        for d in args.extra_depths
        if d != args.depth
    ]
    peers: list[dict[str, Any]] = []
    ref = None if args.no_arctic else import_arctic_reference(args.arctic_path)
    if ref is not None:
        peers.append(replay_arctic(traces, ref, args.depth, args.k, params, args.context_len))
    if not args.no_ngram:
        ngram = replay_ngram(traces, args.k)
        if ngram is not None:
            peers.append(ngram)
    replays += peers
    batch = bench_batch(
        traces,
        args.batch_sizes,
        args.batch_advance,
        args.depth,
        args.k,
        args.batch_steps,
        args.threads,
    )

    report = {
        "meta": {
            "traces": str(args.traces),
            "tokenizer": tokenizer.name,
            "num_traces": len(traces),
            "family_counts": dict(Counter(t.family for t in traces)),
            "depth": args.depth,
            "k": args.k,
            "context_len": args.context_len or args.depth,
            "spec_params": asdict(params),
            "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
            "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
            "library_commit": library_version(),
            "arctic_reference": asdict(ref) | {"cache_cls": ref.cache_cls.__qualname__}
            if ref
            else None,
            "total_seconds": time.perf_counter() - t_start,
        },
        "reference": {} if synthetic else REFERENCE,
        "replays": replays,
        "batch": batch,
    }
    report["head_to_head"] = [head_to_head(replays[0], peer, traces) for peer in peers]
    report["targets"] = [
        {"target": t, "met": ok, "measured": m} for t, ok, m in target_checks(report)
    ]
    markdown = render_markdown(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "suffix_sim.md").write_text(markdown)
    (args.out_dir / "suffix_sim.json").write_text(json.dumps(report, indent=2))
    print()
    print(markdown)
    print(f"wrote {args.out_dir / 'suffix_sim.md'} and {args.out_dir / 'suffix_sim.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
