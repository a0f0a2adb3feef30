"""How many draft tokens the target model will accept, learned from what it
accepted.

A suffix draft token's probability is the tree's frequency estimate of the
whole prefix up to it (a running product), so the sum over a draft is the
expected number of accepted tokens *if* the estimates are calibrated. They
are not: one earlier occurrence gives probability 1.0. So each draft
token's value is a calibrated acceptance probability:

- a global table maps (estimated probability, position in the draft, the
  draft's match length) to the observed share of such tokens that were
  accepted (starting from the estimate itself, with a small prior weight).
  The match length (how many context tokens the tree matched) matters most
  where the estimates say little: on bench-lm's agentic outputs 97 % of
  draft tokens carry the estimate 1.0, and their acceptance ranged from
  13-21 % (matches of 4-7 tokens, beyond the first position) to 44-86 %
  (matches of 8 and more);
- a per-request factor (observed accepted / calibrated expected, averaged
  over the request's recent drafts) scales it for requests that run better
  or worse than the average. Without drafts it drifts back to 1, so a
  request that was hard to predict is tried again later.

Values never rise along a draft, so the best ``n`` tokens of a step are
always prefixes of its drafts. Drafts without probabilities (the ``arctic``
method's speculator) use their own table, with probability 1.0 for every
token: a per-position acceptance rate.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt

SOURCES = ("suffix", "speculator")
_P_BINS = 10  # estimated probability in tenths
_POS_BINS = 6  # draft position 1, 2-3, 4-7, 8-15, 16-31, 32+
_ML_BINS = 5  # match length 0-3, 4-7, 8-15, 16+, unknown (-1: speculator drafts)
_SHAPE = (_P_BINS, _POS_BINS, _ML_BINS)
_FACTOR_MIN, _FACTOR_MAX = 0.05, 4.0  # a request's factor stays within these
_NO_STATS = (0.0, 0.0)


def check_source(source: str) -> None:
    """KeyError unless ``source`` is a known drafter (see SOURCES)."""
    if source not in SOURCES:
        raise KeyError(f"unknown draft source {source!r}; known: {', '.join(SOURCES)}")


def _p_bin(p: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    return np.clip((p * _P_BINS).astype(np.intp), 0, _P_BINS - 1)


def _pos_bin(pos: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    return np.minimum(np.log2(np.maximum(pos, 1)).astype(np.intp), _POS_BINS - 1)


def _ml_bin(ml: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    known = np.minimum(np.log2(np.maximum(ml, 1)).astype(np.intp) - 1, 3)
    return np.where(ml < 0, _ML_BINS - 1, np.maximum(known, 0))


_POS_LUT = _pos_bin(np.arange(2**_POS_BINS))  # bins saturate at position 2**(_POS_BINS-1)


def _cells(
    probs: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    match_lens: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Each draft token's table cell (flat index) and 1-based position
    (probabilities known to be in [0, 1])."""
    pos = np.arange(len(probs), dtype=np.int64) - np.repeat(offsets[:-1], lengths) + 1
    pb = np.minimum((probs * _P_BINS).astype(np.intp), _P_BINS - 1)
    qb = _POS_LUT[np.minimum(pos, len(_POS_LUT) - 1)]
    mb = np.repeat(_ml_bin(match_lens), lengths)
    return (pb * _POS_BINS + qb) * _ML_BINS + mb, pos


def _match_lens(match_lens: npt.ArrayLike | None, n: int) -> npt.NDArray[np.int64]:
    if match_lens is None:
        return np.full(n, -1, dtype=np.int64)
    ml = np.asarray(match_lens, dtype=np.int64).reshape(-1)
    if len(ml) != n:
        raise ValueError(f"{len(ml)} match lengths for {n} drafts")
    return ml


def segment_cummin(values: npt.NDArray[np.float64], lengths: npt.NDArray[np.int64]) -> np.ndarray:
    """Running minimum within each consecutive segment of ``lengths``."""
    if len(values) and not values.min() >= 0:
        raise ValueError("segment_cummin needs values >= 0")
    return _segment_cummin(values, lengths)


def _segment_cummin(values: npt.NDArray[np.float64], lengths: npt.NDArray[np.int64]) -> np.ndarray:
    if len(values) == 0:
        return values.copy()
    if len(lengths) == 1:
        return np.asarray(np.minimum.accumulate(values))
    big = 2.0 * float(values.max()) + 1.0
    seg = np.repeat(np.arange(len(lengths), dtype=np.float64), lengths) * big
    # later segments are shifted below every earlier one, so a running
    # minimum over the whole array never reaches back into an earlier draft
    return np.asarray(np.minimum.accumulate(values - seg) + seg)


class AcceptanceModel:
    """Calibrated per-token acceptance (see the module doc).

    Args:
        prior_weight: pseudo-observations behind each table cell's prior
            (the estimate itself).
        request_memory: weight of a request's earlier drafts against its
            latest one in its factor (0: the latest draft alone).
        max_trials: a table cell's observations are halved beyond this, so
            it keeps following the traffic.
    """

    def __init__(
        self, prior_weight: float = 4.0, request_memory: float = 0.7, max_trials: float = 4096.0
    ) -> None:
        if not prior_weight > 0:
            raise ValueError(f"prior_weight must be > 0, got {prior_weight!r}")
        if not 0.0 <= request_memory < 1.0:
            raise ValueError(f"request_memory must be in [0, 1), got {request_memory!r}")
        if not max_trials > prior_weight:
            raise ValueError("max_trials must exceed prior_weight")
        self.request_memory = request_memory
        self.max_trials = max_trials
        mid = (np.arange(_P_BINS) + 0.5) / _P_BINS
        mid[-1] = 1.0  # the top bin holds the many estimates of exactly 1.0
        prior = np.broadcast_to(mid[:, None, None], _SHAPE).copy()
        self._trials = {s: np.full(_SHAPE, prior_weight) for s in SOURCES}
        self._hits = {s: prior * prior_weight for s in SOURCES}
        self._table = {s: prior.ravel().copy() for s in SOURCES}  # hits / trials, flat
        # per (source, request): running accepted and calibrated expected
        self._req: dict[tuple[str, Hashable], list[float]] = {}

    def calibrated(
        self,
        probs: npt.NDArray[np.float64],
        positions: npt.NDArray[np.int64],
        source: str,
        match_lens: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Table values for tokens of estimated ``probs`` at draft ``positions``
        (1-based) of drafts with these match lengths (per token; None: unknown)."""
        check_source(source)
        table = self._table[source].reshape(_SHAPE)
        ml = _match_lens(match_lens, len(probs))
        return np.asarray(table[_p_bin(probs), _pos_bin(positions), _ml_bin(ml)], dtype=np.float64)

    def factor(self, req_id: Hashable, source: str = "suffix") -> float:
        """The request's factor: (accepted + 1) / (expected + 1) over its
        recent drafts, in [0.05, 4]."""
        acc, exp = self._req.get((source, req_id), _NO_STATS)
        return min(max((acc + 1.0) / (exp + 1.0), _FACTOR_MIN), _FACTOR_MAX)

    def token_values(
        self,
        req_ids: Sequence[Hashable],
        probs: npt.ArrayLike,
        offsets: npt.ArrayLike,
        source: str = "suffix",
        match_lens: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.float64]:
        """Expected acceptance of every draft token (flat, split by
        ``offsets`` like ``speculate_batch``'s result; ``match_lens`` per
        draft, None: unknown), non-increasing along each draft."""
        check_source(source)
        p, off = flat_drafts(probs, offsets, len(req_ids))
        return self.values_unchecked(req_ids, p, off, source, _match_lens(match_lens, len(req_ids)))

    def values_unchecked(
        self,
        req_ids: Sequence[Hashable],
        probs: npt.NDArray[np.float64],
        offsets: npt.NDArray[np.int64],
        source: str,
        match_lens: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float64]:
        """:meth:`token_values` for arguments already checked (the draft
        policy's own arrays, each step): float64 probabilities in [0, 1],
        int64 offsets, one int64 match length per draft, a known source."""
        lengths = np.diff(offsets)
        cell, _ = _cells(probs, offsets, lengths, match_lens)
        v = self._table[source][cell]
        stats = self._req
        # factor() of each request, inline and clipped at once: this runs
        # every step for every request
        factors = []
        for r in req_ids:
            acc, exp = stats.get((source, r), _NO_STATS)
            factors.append((acc + 1.0) / (exp + 1.0))
        v *= np.repeat(np.clip(factors, _FACTOR_MIN, _FACTOR_MAX), lengths)
        np.minimum(v, 1.0, out=v)  # a probability, however well the request runs
        return _segment_cummin(v, lengths)

    def observe(
        self,
        req_id: Hashable,
        probs: npt.ArrayLike,
        accepted: int,
        source: str = "suffix",
        match_len: int = -1,
    ) -> None:
        """The target model accepted the first ``accepted`` tokens of a
        draft whose tokens had estimated ``probs`` (an empty draft: the
        request's factor drifts back toward 1)."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if isinstance(accepted, bool) or not isinstance(accepted, (int, np.integer)):
            raise TypeError(f"accepted must be an integer, got {type(accepted).__name__}")
        self.observe_batch([req_id], p, np.array([0, len(p)]), [accepted], source, [match_len])

    def observe_batch(
        self,
        req_ids: Sequence[Hashable],
        probs: npt.ArrayLike,
        offsets: npt.ArrayLike,
        accepted: Sequence[int] | npt.NDArray[np.int64],
        source: str = "suffix",
        match_lens: npt.ArrayLike | None = None,
    ) -> None:
        """:meth:`observe` for a whole step: the drafts flat, split by ``offsets``."""
        check_source(source)
        p, off = flat_drafts(probs, offsets, len(req_ids))
        acc = np.asarray(accepted)
        if acc.shape != (len(req_ids),) or not np.issubdtype(acc.dtype, np.integer):
            raise TypeError("accepted must hold one integer per request")
        if np.any(acc < 0) or np.any(acc > np.diff(off)):
            raise ValueError("accepted counts must be in [0, draft length] for every request")
        self.observe_unchecked(
            req_ids, p, off, acc.astype(np.int64), source, _match_lens(match_lens, len(req_ids))
        )

    def observe_unchecked(
        self,
        req_ids: Sequence[Hashable],
        probs: npt.NDArray[np.float64],
        offsets: npt.NDArray[np.int64],
        accepted: npt.NDArray[np.int64],
        source: str,
        match_lens: npt.NDArray[np.int64],
    ) -> None:
        """:meth:`observe_batch` for arguments already checked (as for
        :meth:`values_unchecked`; accepted counts within each draft)."""
        lengths = np.diff(offsets)
        cell, pos = _cells(probs, offsets, lengths, match_lens)
        expected = np.bincount(
            np.repeat(np.arange(len(lengths)), lengths),
            self._table[source][cell],
            minlength=len(lengths),
        )
        m = self.request_memory
        for r, n, a, e in zip(req_ids, lengths.tolist(), accepted.tolist(), expected.tolist()):
            stats = self._req.setdefault((source, r), [0.0, 0.0])
            if n == 0:
                stats[0] *= 0.95
                stats[1] *= 0.95
            else:
                stats[0] = m * stats[0] + a
                stats[1] = m * stats[1] + e
        hit = pos <= np.repeat(accepted, lengths)
        size = _P_BINS * _POS_BINS * _ML_BINS
        self._trials[source] += np.bincount(cell, minlength=size).reshape(_SHAPE)
        self._hits[source] += np.bincount(cell[hit], minlength=size).reshape(_SHAPE)
        full = self._trials[source] > self.max_trials
        if full.any():
            self._trials[source][full] *= 0.5
            self._hits[source][full] *= 0.5
        self._table[source] = (self._hits[source] / self._trials[source]).ravel()

    def forget(self, req_id: Hashable) -> None:
        for s in SOURCES:
            self._req.pop((s, req_id), None)


def flat_drafts(
    probs: npt.ArrayLike, offsets: npt.ArrayLike, n: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``n`` drafts' probabilities, flat and split by ``offsets``, as float64
    and int64 arrays; ValueError unless they are well formed."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    off = np.asarray(offsets, dtype=np.int64).reshape(-1)
    if len(off) != n + 1 or off[0] != 0 or off[-1] != len(p) or (n and np.diff(off).min() < 0):
        raise ValueError(
            f"offsets must be non-decreasing, start at 0, end at len(probs)={len(p)} and "
            f"have one more entry than the {n} requests"
        )
    if len(p) and not (p.min() >= 0 and p.max() <= 1):  # NaN fails both
        raise ValueError("draft probabilities must be in [0, 1]")
    return p, off
