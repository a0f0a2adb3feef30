"""Timed regions: the garbage collector paused, percentiles of samples."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


def percentile_us(samples_ns: Sequence[int], q: float) -> float:
    """The ``q``-th percentile of nanosecond samples, in microseconds (NaN if none)."""
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
