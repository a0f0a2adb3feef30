"""What an engine step costs, per step shape, learned from the engine's own
step times.

A step's wall time depends on how vLLM runs it (its *shape*) and on how many
tokens it schedules:

- ``full``: one captured full CUDA graph (a uniform decode step, every
  request verifying exactly ``num_speculative_tokens`` drafts, in vLLM's
  default ``FULL_AND_PIECEWISE`` mode; any step that fits a graph in
  ``FULL`` mode);
- ``piecewise``: piecewise CUDA graphs with eager attention between them
  (any other step that fits the largest graph);
- ``eager``: no graphs (CPU, ``enforce_eager``, or a step larger than the
  largest graph).

:func:`step_shape` says which one vLLM's dispatcher picks (mirrored from
``vllm/v1/cudagraph_dispatcher.py``, 0.26 - 0.33). :class:`StepCostModel`
fits, per shape, a line ``seconds = a + b * tokens`` (``a, b >= 0``) to the
steps it has seen, by least squares with exponential forgetting (each
observation of a shape discounts the earlier ones by ``forget``), so that
every observation updates the whole curve and none goes stale while the
machine's load or the requests' lengths change. Observations far above the
current line (an idle engine, another process on the machine) are dropped.
A shape never observed borrows the cheapest observed one; with nothing
observed, every step costs the same, so the policy starts with long drafts
and learns from them. Which sizes were measured lately is kept on a
geometric grid for the policy's exploration (:meth:`StepCostModel.stale`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SHAPES = ("full", "piecewise", "eager")
FULL_DECODE_MODES = ("FULL_AND_PIECEWISE", "FULL_DECODE_ONLY")
GRAPH_MODES = ("NONE", "PIECEWISE", "FULL", *FULL_DECODE_MODES)
# grid of token counts, 1 .. 2**17 (larger steps are costed at the last point)
_GRID = np.unique(np.round(2.0 ** (np.arange(0, 4 * 17 + 1) / 4.0)).astype(np.int64))


def graph_mode_name(compilation_config: Any) -> str:
    """vLLM's resolved ``cudagraph_mode`` as a name ("NONE" when unset)."""
    mode = getattr(compilation_config, "cudagraph_mode", None)
    if mode is None:
        return "NONE"
    return str(getattr(mode, "name", mode))


def largest_graph(compilation_config: Any) -> int:
    """Tokens of the largest captured graph (0 without graphs)."""
    if graph_mode_name(compilation_config) == "NONE":
        return 0
    size = getattr(compilation_config, "max_cudagraph_capture_size", None)
    return int(size) if size else 0


def step_shape(mode: str, max_graph: int, num_tokens: int, uniform: bool) -> str:
    """The shape vLLM runs a step of ``num_tokens`` in. ``uniform``: every
    request verifies exactly ``num_speculative_tokens`` drafts (> 0)."""
    if mode not in GRAPH_MODES:
        raise ValueError(f"unknown cudagraph mode {mode!r}; known: {', '.join(GRAPH_MODES)}")
    if mode == "NONE" or num_tokens > max_graph:
        return "eager"
    if mode == "FULL" or (uniform and mode in FULL_DECODE_MODES):
        return "full"
    return "eager" if mode == "FULL_DECODE_ONLY" else "piecewise"


def graph_step_shape(mode: str, max_graph: int, uniform: bool) -> str:
    """:func:`step_shape` of every step that fits the largest graph (a
    larger step runs eager)."""
    return step_shape(mode, max_graph, 1, uniform) if max_graph >= 1 else "eager"


class StepCostModel:
    """Seconds per step, per shape, against scheduled tokens (see module doc).

    Args:
        forget: weight left to earlier observations of a shape at each new
            one (0.98: the last ~50 steps count).
        outlier: observations above ``outlier`` times the current line (once
            it rests on 5 or more) are dropped.
    """

    def __init__(self, forget: float = 0.98, outlier: float = 3.0) -> None:
        if not 0.0 < forget <= 1.0:
            raise ValueError(f"forget must be in (0, 1], got {forget!r}")
        if not outlier > 1.0:
            raise ValueError(f"outlier must be > 1, got {outlier!r}")
        self.forget = forget
        self.outlier = outlier
        # per shape: weighted sums of 1, n, n^2, t, n*t; observations; the fit
        self._sums = {s: np.zeros(5) for s in SHAPES}
        self._count = dict.fromkeys(SHAPES, 0)
        self._fit: dict[str, tuple[float, float]] = {}
        self._range = {s: [0, 0] for s in SHAPES}
        self._seen = {s: np.full(len(_GRID), -1, dtype=np.int64) for s in SHAPES}
        self.observations = 0

    # ------------------------------------------------------------ learning

    def observe(self, shape: str, num_tokens: int, seconds: float, weight: float = 1.0) -> bool:
        """Record one step; False when it was dropped as an outlier."""
        self._check_shape(shape)
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)):
            raise TypeError(f"num_tokens must be an integer, got {type(num_tokens).__name__}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be a finite number > 0, got {weight!r}")
        n = float(num_tokens)
        if self._count[shape] >= 5 and seconds > self.outlier * self._line(shape, n):
            return False
        sums = self._sums[shape]
        sums *= self.forget
        sums += weight * np.array([1.0, n, n * n, seconds, n * seconds])
        self._count[shape] += 1
        self._fit[shape] = _solve(sums)
        lo, hi = self._range[shape]
        self._range[shape] = [min(lo, int(n)) if lo else int(n), max(hi, int(n))]
        self.observations += 1
        (i0, w0), (i1, w1) = _bracket(int(num_tokens))
        self._seen[shape][i0 if w0 >= w1 else i1] = self.observations
        return True

    # ------------------------------------------------------------ queries

    def known(self, shape: str) -> bool:
        """Whether ``shape`` has been observed."""
        self._check_shape(shape)
        return shape in self._fit

    def line(self, shape: str) -> tuple[float, float]:
        """The fitted (seconds per step, seconds per token) of a known shape."""
        self._check_shape(shape)
        if shape not in self._fit:
            raise KeyError(f"step shape {shape!r} has no observations yet")
        return self._fit[shape]

    def cost(self, shape: str, num_tokens: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Estimated seconds of steps of ``num_tokens`` (scalar or array).

        A shape never observed borrows the cheapest observed shape's line
        (optimism: the policy will try it and learn); with nothing observed
        at all, every step costs 1.0 (flat: only the ratio of costs matters).
        """
        self._check_shape(shape)
        n = np.asarray(num_tokens, dtype=np.float64)
        if n.size and not (n.min() >= 0 and n.max() < np.inf):  # NaN fails both
            raise ValueError("num_tokens must be finite and >= 0")
        if shape in self._fit:
            a, b = self._fit[shape]
            return np.asarray(a + b * n, dtype=np.float64)
        others = [self._fit[s] for s in SHAPES if s in self._fit]
        if not others:
            return np.ones_like(n)
        return np.asarray(np.minimum.reduce([a + b * n for a, b in others]), dtype=np.float64)

    def _line(self, shape: str, n: float) -> float:
        a, b = self._fit[shape]
        return a + b * n

    def stale(self, shape: str, num_tokens: int, horizon: int) -> bool:
        """No observation of this shape near ``num_tokens`` (the two grid
        points around it) in the last ``horizon`` observations."""
        self._check_shape(shape)
        (i0, _), (i1, _) = _bracket(max(int(num_tokens), 1))
        last = max(self._seen[shape][i0], self._seen[shape][i1])
        return last < 0 or self.observations - last > horizon

    def _check_shape(self, shape: str) -> None:
        if shape not in SHAPES:
            raise KeyError(f"unknown step shape {shape!r}; known: {', '.join(SHAPES)}")

    # ------------------------------------------------------------ files

    def snapshot(self) -> dict[str, Any]:
        """The fitted lines as JSON-able data: per shape, the line at the
        smallest and largest step sizes observed (tokens, milliseconds) and
        the weight of the observations behind it."""
        shapes: dict[str, Any] = {}
        for s in SHAPES:
            if s not in self._fit:
                shapes[s] = {"tokens": [], "ms": [], "weight": []}
                continue
            lo, hi = self._range[s]
            points = [lo] if hi == lo else [lo, hi]
            w = round(float(self._sums[s][0]) / len(points), 3)
            shapes[s] = {
                "tokens": points,
                "ms": [round(1e3 * self._line(s, p), 4) for p in points],
                "weight": [w] * len(points),
            }
        return {"format": "arctic-step-cost/1", "shapes": shapes}

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any], **kwargs: Any) -> StepCostModel:
        """A model holding a :meth:`snapshot`'s curves (a measured cost curve:
        per shape, points of tokens and milliseconds, fitted with a line)."""
        if not isinstance(data, Mapping) or data.get("format") != "arctic-step-cost/1":
            raise ValueError(
                'not a step cost curve: expected {"format": "arctic-step-cost/1", ...}'
            )
        model = cls(**kwargs)
        shapes = data.get("shapes")
        if not isinstance(shapes, Mapping):
            raise ValueError('step cost curve: "shapes" must map shape names to curves')
        for shape, curve in shapes.items():
            model._check_shape(shape)
            try:
                tokens = [int(t) for t in curve["tokens"]]
                ms = [float(v) for v in curve["ms"]]
                weight = [float(w) for w in curve.get("weight", [1.0] * len(tokens))]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"step cost curve {shape!r}: needs equal-length lists tokens and ms ({e})"
                ) from e
            if not len(tokens) == len(ms) == len(weight):
                raise ValueError(f"step cost curve {shape!r}: tokens and ms differ in length")
            for t, v, w in zip(tokens, ms, weight):
                if t < 1 or not math.isfinite(v) or v <= 0 or not w > 0:
                    raise ValueError(f"step cost curve {shape!r}: bad point ({t}, {v} ms, {w})")
            saved = model.forget
            model.forget = 1.0  # the points are one fit, not a sequence
            for t, v, w in zip(tokens, ms, weight):
                model._count[shape] = 0  # no outlier test between the file's points
                model.observe(shape, t, v / 1e3, max(w, 1e-3))
            model._count[shape] = len(tokens)
            model.forget = saved
        return model

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> StepCostModel:
        """:meth:`from_snapshot` of a JSON file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read step cost curve {path}: {e}") from e
        return cls.from_snapshot(data, **kwargs)


def _solve(sums: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Weighted least squares ``t = a + b n`` with ``a, b >= 0``."""
    w, sn, snn, st, snt = (float(x) for x in sums)
    mean_n, mean_t = sn / w, st / w
    var = snn / w - mean_n * mean_n
    b = (snt / w - mean_n * mean_t) / var if var > 1e-9 * max(mean_n * mean_n, 1.0) else 0.0
    b = max(b, 0.0)
    a = mean_t - b * mean_n
    if a < 0.0:  # through the origin instead
        a, b = 0.0, max(snt / snn, 0.0)
    return a, b


def _bracket(n: int) -> tuple[tuple[int, float], tuple[int, float]]:
    """The two grid points around ``n`` and their interpolation weights."""
    n = min(n, int(_GRID[-1]))
    i1 = int(np.searchsorted(_GRID, n))
    if _GRID[i1] == n:
        return (i1, 1.0), (i1, 0.0)
    i0 = i1 - 1
    w1 = (n - _GRID[i0]) / (_GRID[i1] - _GRID[i0])
    return (i0, float(1.0 - w1)), (i1, float(w1))
