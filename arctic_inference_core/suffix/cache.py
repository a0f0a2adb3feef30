"""Typed public wrapper around the native suffix cache."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable, KeysView, Sequence
from typing import Union

import numpy as np
import numpy.typing as npt

import arctic_inference_core._C as _C  # the native module (a stub _C.pyi is built with it)
from arctic_inference_core._validate import check_int

TokenIds = Union[Sequence[int], npt.NDArray[np.integer]]  # noqa: UP007 - a runtime alias

_INT32_MAX = 0x7FFFFFFF
_INT_TYPES = (int, np.integer)  # sizes may come from numpy arrays


class SuffixDecodingDraft:
    """One speculated continuation.

    Attributes:
        token_ids: Draft token ids. In path mode they form a chain; in tree
            mode ``parents`` links them into a tree.
        parents: For each token, the index of its parent token in
            ``token_ids`` (-1 for a token that directly follows the context).
        probs: Estimated probability of each token (from occurrence counts).
        score: Sum of ``probs``: the expected number of accepted tokens.
        match_len: Number of context tokens matched to produce the draft.
    """

    __slots__ = ("token_ids", "_parents", "_probs", "score", "match_len")

    def __init__(
        self,
        token_ids: list[int] | None = None,
        parents: list[int] | None = None,
        probs: list[float] | bytes | None = None,
        score: float = 0.0,
        match_len: int = 0,
    ) -> None:
        self.token_ids: list[int] = [] if token_ids is None else token_ids
        # parents None means a chain; probs may arrive as packed float64
        # bytes. Both are materialized on first access (engines rarely read
        # them, and building them costs more than drafting).
        self._parents = parents
        self._probs = probs
        self.score = score
        self.match_len = match_len

    @property
    def parents(self) -> list[int]:
        if self._parents is None:
            self._parents = list(range(-1, len(self.token_ids) - 1))
        return self._parents

    @property
    def probs(self) -> list[float]:
        if self._probs is None:
            self._probs = []
        elif isinstance(self._probs, bytes):
            self._probs = np.frombuffer(self._probs, dtype=np.float64).tolist()
        return self._probs  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SuffixDecodingDraft):
            return NotImplemented
        return (self.token_ids, self.parents, self.probs, self.score, self.match_len) == (
            other.token_ids,
            other.parents,
            other.probs,
            other.score,
            other.match_len,
        )

    def __repr__(self) -> str:
        return (
            f"SuffixDecodingDraft(token_ids={self.token_ids}, parents={self.parents}, "
            f"probs={self.probs}, score={self.score}, match_len={self.match_len})"
        )


class SuffixDecodingDraftBatch:
    """Drafts of one engine step, stored flat (see ``speculate_batch``).

    Draft ``i`` is ``token_ids[offsets[i]:offsets[i + 1]]``. Index it to get a
    :class:`SuffixDecodingDraft`, or call :meth:`token_id_lists` for the plain
    lists an engine feeds to verification.
    """

    __slots__ = ("token_ids", "parents", "probs", "offsets", "scores", "match_lens")

    def __init__(
        self,
        token_ids: npt.NDArray[np.int32],
        parents: npt.NDArray[np.int32],
        probs: npt.NDArray[np.float64],
        offsets: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64],
        match_lens: npt.NDArray[np.int32],
    ) -> None:
        self.token_ids = token_ids
        self.parents = parents
        self.probs = probs
        self.offsets = offsets
        self.scores = scores
        self.match_lens = match_lens

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i: int) -> SuffixDecodingDraft:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"draft index {i} out of range for a batch of {n}")
        i %= n
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return SuffixDecodingDraft(
            token_ids=self.token_ids[a:b].tolist(),
            parents=self.parents[a:b].tolist(),
            probs=self.probs[a:b].tolist(),
            score=float(self.scores[i]),
            match_len=int(self.match_lens[i]),
        )

    def token_id_lists(self) -> list[list[int]]:
        """Draft token ids of every request, as lists of ints."""
        flat = self.token_ids.tolist()
        bounds = self.offsets.tolist()
        return [flat[a:b] for a, b in zip(bounds, bounds[1:])]


class SuffixDecodingCache:
    """Caches token sequences and drafts continuations of a request's context.

    Each active request keeps a local suffix tree of its prompt and response.
    Responses also go to one global tree shared by all requests (until
    evicted, FIFO by request start, once ``max_cached_requests`` is reached).
    ``speculate`` matches the last tokens of the context in both trees and
    follows the most frequent continuations.

    Args:
        max_tree_depth: Longest string whose frequency statistics are kept
            (tokens). Drafts may run past it by copying: from the request's
            own prompt and output the one matching occurrence, from the
            global tree the occurrence completed last.
        max_cached_requests: Responses kept in the global tree. ``-1``: no
            limit; ``0``: no global tree.
        num_threads: Threads ``speculate_batch`` may use for large batches
            (the calling thread included; 1 = no extra threads).
        share_active_responses: Put each token of a cached response into the
            global tree as soon as it is added, so running requests draft from
            each other's output (n samples of one prompt, parallel agent
            calls). The request's local tree then holds its prompt only, so
            its own text counts once. Off: a response enters the global tree
            when its request stops.
    """

    def __init__(
        self,
        max_tree_depth: int = 64,
        max_cached_requests: int = -1,
        num_threads: int = 1,
        share_active_responses: bool = False,
    ) -> None:
        # Each running request tracks max_tree_depth suffixes: keep it sane.
        self._max_tree_depth = check_int(
            "max_tree_depth", max_tree_depth, 1, 4096, types=_INT_TYPES
        )
        self._max_cached_requests = check_int(
            "max_cached_requests", max_cached_requests, -1, _INT32_MAX, types=_INT_TYPES
        )
        if not isinstance(share_active_responses, (bool, np.bool_)):
            raise TypeError(
                "share_active_responses must be a bool, got "
                f"{type(share_active_responses).__name__}"
            )
        self._core = _C.SuffixCacheCore(
            self._max_tree_depth,
            check_int("num_threads", num_threads, 1, 256, types=_INT_TYPES),
            bool(share_active_responses),
        )
        self._active: dict[Hashable, int] = {}
        self._cached: dict[Hashable, int] = {}  # insertion order = FIFO order
        self._handles = itertools.count()
        # Lifecycle calls check and then change both dicts; the hot paths
        # (add, speculate) only read them and the native side has its own lock.
        self._lifecycle = threading.RLock()

    # ------------------------------------------------------------ properties

    @property
    def max_tree_depth(self) -> int:
        return self._max_tree_depth

    @property
    def max_cached_requests(self) -> int:
        return self._max_cached_requests

    @property
    def num_threads(self) -> int:
        return int(self._core.num_threads)

    @property
    def share_active_responses(self) -> bool:
        return bool(self._core.share_active)

    @property
    def active_requests(self) -> KeysView[Hashable]:
        """Ids of requests started and not yet stopped (set-like view)."""
        return self._active.keys()

    @property
    def cached_requests(self) -> KeysView[Hashable]:
        """Ids of requests whose responses are in the global tree (set-like view)."""
        return self._cached.keys()

    # ------------------------------------------------------------ lifecycle

    def start_request(self, req_id: Hashable, prompt_token_ids: TokenIds) -> None:
        """Begin tracking a request; its prompt becomes draftable for it.

        If the global cache is enabled, a slot for the response is allocated
        (a previously cached response under the same id is evicted first) and
        the oldest cached responses are evicted beyond ``max_cached_requests``.

        Raises:
            ValueError: the request is already active, or a token id is bad.
            TypeError: ``prompt_token_ids`` is not an integer array/sequence.
        """
        _check_hashable(req_id)
        with self._lifecycle:
            self._start(req_id, prompt_token_ids)

    def _start(self, req_id: Hashable, prompt_token_ids: TokenIds) -> None:
        if req_id in self._active:
            raise ValueError(
                f"request {req_id!r} is already active; call stop_request() before reusing its id"
            )
        handle = next(self._handles)
        cache = self._max_cached_requests != 0
        # Native start first: a rejected prompt must leave everything as it was.
        self._core.start_request(handle, prompt_token_ids, cache)
        if cache and req_id in self._cached:
            self.evict_cached_response(req_id)
        self._active[req_id] = handle
        if cache:
            self._cached[req_id] = handle
            self._evict_overflow(keep=req_id)

    def add_active_response(self, req_id: Hashable, token_ids: int | TokenIds) -> None:
        """Append generated token(s) to an active request's response.

        Raises:
            KeyError: the request is not active.
        """
        self._core.add_response(self._handle(req_id), token_ids)

    def stop_request(self, req_id: Hashable) -> None:
        """Stop tracking a request; its cached response (if any) stays.

        Raises:
            KeyError: the request is not active.
        """
        with self._lifecycle:
            handle = self._handle(req_id)
            self._core.stop_request(handle)
            del self._active[req_id]

    def evict_cached_response(self, req_id: Hashable) -> None:
        """Remove a request's response from the global tree.

        Raises:
            KeyError: the request has no cached response.
        """
        with self._lifecycle:
            try:
                handle = self._cached.pop(req_id)
            except KeyError:
                raise KeyError(f"request {req_id!r} has no cached response") from None
            except TypeError:
                raise TypeError(f"req_id must be hashable, got {type(req_id).__name__}") from None
            self._core.evict_response(handle)

    def _evict_overflow(self, keep: Hashable) -> None:
        if self._max_cached_requests < 0:
            return
        while len(self._cached) > self._max_cached_requests:
            oldest = next(r for r in self._cached if r != keep)
            self.evict_cached_response(oldest)

    # ------------------------------------------------------------ drafting

    def speculate(
        self,
        req_id: Hashable,
        context: TokenIds | None,
        max_spec_tokens: int | None = None,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
    ) -> SuffixDecodingDraft:
        """Draft a continuation of ``context`` for an active request.

        Args:
            req_id: An active request.
            context: Tokens to continue (only the last ``max_tree_depth``
                matter), normally the request's last tokens. ``None`` uses the
                request's own prompt and response so far.
            max_spec_tokens: Draft length cap; ``None`` means ``max_tree_depth``.
            max_spec_factor: A match of ``m`` tokens may draft at most
                ``m * max_spec_factor + max_spec_offset`` tokens.
            max_spec_offset: See ``max_spec_factor``.
            min_token_prob: Stop drafting once a token's estimated probability
                falls below this (within [0, 1]).
            use_tree_spec: Draft a tree of alternatives instead of a chain.

        Raises:
            KeyError: the request is not active.
            ValueError / TypeError: a bad argument.
        """
        # Hot path: ranges and types are checked natively (TypeError names
        # the argument, ValueError says the allowed range).
        try:
            handle = self._active[req_id]
        except (KeyError, TypeError):
            self._handle(req_id)  # raises the explanatory error
            raise
        return SuffixDecodingDraft(
            *self._core.speculate(
                handle,
                context,
                self._max_tree_depth if max_spec_tokens is None else max_spec_tokens,
                max_spec_factor,
                max_spec_offset,
                min_token_prob,
                bool(use_tree_spec),
            )
        )

    def speculate_batch(
        self,
        req_ids: Sequence[Hashable],
        new_token_ids: Sequence[TokenIds] | None = None,
        contexts: Sequence[TokenIds] | None = None,
        max_spec_tokens: int | None = None,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        use_tree_spec: bool = False,
    ) -> SuffixDecodingDraftBatch:
        """Serve a whole engine step in one native call (GIL released).

        For each request ``i``: append ``new_token_ids[i]`` to its response
        (same as ``add_active_response``), then draft from ``contexts[i]``, or
        from its own latest tokens when ``contexts`` is ``None``. All ids are
        checked before anything changes. With ``share_active_responses``,
        every request's new tokens are added before the first draft (as
        ``add_active_response`` for all, then ``speculate`` for each).

        Raises:
            KeyError: a request is not active.
            ValueError / TypeError: bad arguments (lengths, token ids, ...).
        """
        try:
            handles = [self._active[r] for r in req_ids]
        except KeyError as e:
            raise KeyError(f"request {e.args[0]!r} is not active") from None
        except TypeError as e:
            raise TypeError(f"req_ids must be a sequence of hashable ids: {e}") from None
        return SuffixDecodingDraftBatch(
            *self._core.speculate_batch(
                handles,
                new_token_ids,
                contexts,
                self._max_tree_depth if max_spec_tokens is None else max_spec_tokens,
                max_spec_factor,
                max_spec_offset,
                min_token_prob,
                bool(use_tree_spec),
            )
        )

    # ------------------------------------------------------------ introspection

    def num_cached_tokens(self) -> int:
        """Tokens held in all trees (prompts and responses of active requests,
        cached responses)."""
        return int(self._core.num_tokens())

    def memory_bytes(self) -> int:
        """Bytes held by the native trees (an accurate estimate)."""
        return int(self._core.memory_bytes())

    def check_integrity(self) -> None:
        """Verify every internal invariant (slow; for tests and debugging).

        Raises:
            RuntimeError: an invariant is broken (a bug: please report it).
        """
        err = self._core.check_integrity()
        if err:
            raise RuntimeError(f"suffix cache integrity check failed: {err}")

    # ------------------------------------------------------------ helpers

    def _handle(self, req_id: Hashable) -> int:
        try:
            return self._active[req_id]
        except KeyError:
            raise KeyError(
                f"request {req_id!r} is not active; call start_request() first"
            ) from None
        except TypeError:
            raise TypeError(f"req_id must be hashable, got {type(req_id).__name__}") from None


def _check_hashable(req_id: Hashable) -> None:
    try:
        hash(req_id)
    except TypeError:
        raise TypeError(f"req_id must be hashable, got {type(req_id).__name__}") from None
