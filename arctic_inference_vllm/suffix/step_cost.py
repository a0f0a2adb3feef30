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
keeps, per shape, a piecewise-linear curve of seconds against scheduled
tokens on a geometric grid (four points per doubling), each point a running
mean that turns into an exponential average after ``1 / min_rate``
observations. Where a shape has no observation, the curve is optimistic: flat
above the largest observed size and proportional to the tokens below the
smallest, so that the policy tries those sizes once and learns them. Queries
are monotonic: a step never costs less than a smaller one of the same shape.
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


class StepCostModel:
    """Seconds per step, per shape, against scheduled tokens (see module doc).

    Args:
        min_rate: weight of a new observation once a grid point has had
            ``1 / min_rate`` of them (an exponential average from then on).
        outlier: observations above ``outlier`` times the current estimate
            (once that estimate rests on 3 or more) are dropped: an idle
            engine or another process on the machine, not the step.
    """

    def __init__(self, min_rate: float = 0.05, outlier: float = 4.0) -> None:
        if not 0.0 < min_rate <= 1.0:
            raise ValueError(f"min_rate must be in (0, 1], got {min_rate!r}")
        if not outlier > 1.0:
            raise ValueError(f"outlier must be > 1, got {outlier!r}")
        self.min_rate = min_rate
        self.outlier = outlier
        n = len(_GRID)
        self._value = {s: np.zeros(n) for s in SHAPES}
        self._weight = {s: np.zeros(n) for s in SHAPES}
        self._seen = {s: np.full(n, -1, dtype=np.int64) for s in SHAPES}
        self.observations = 0

    # ------------------------------------------------------------ learning

    def observe(self, shape: str, num_tokens: int, seconds: float) -> bool:
        """Record one step; False when it was dropped as an outlier."""
        self._check_shape(shape)
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, (int, np.integer)):
            raise TypeError(f"num_tokens must be an integer, got {type(num_tokens).__name__}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        (i0, w0), (i1, w1) = _bracket(int(num_tokens))
        weight = self._weight[shape]
        if weight[i0] * w0 + weight[i1] * w1 >= 3.0:
            if seconds > self.outlier * float(self.cost(shape, int(num_tokens))):
                return False
        self.observations += 1
        for i, w in ((i0, w0), (i1, w1)):
            if w <= 0.0:
                continue
            weight[i] += w
            rate = max(w / weight[i], w * self.min_rate)
            self._value[shape][i] += rate * (seconds - self._value[shape][i])
            self._seen[shape][i] = self.observations
        return True

    # ------------------------------------------------------------ queries

    def known(self, shape: str) -> bool:
        """Whether ``shape`` has been observed."""
        self._check_shape(shape)
        return bool(np.any(self._weight[shape] > 0))

    def cost(self, shape: str, num_tokens: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Estimated seconds of steps of ``num_tokens`` (scalar or array).

        A shape never observed borrows the cheapest observed shape's curve
        (optimism: the policy will try it and learn); with nothing observed
        at all, every step costs 1.0 (flat: only the ratio of costs matters).
        """
        self._check_shape(shape)
        n = np.asarray(num_tokens, dtype=np.float64)
        if np.any(~np.isfinite(n)) or np.any(n < 0):
            raise ValueError("num_tokens must be finite and >= 0")
        if self.known(shape):
            return self._curve(shape, n)
        others = [self._curve(s, n) for s in SHAPES if self.known(s)]
        if not others:
            return np.ones_like(n)
        return np.minimum.reduce(others)

    def stale(self, shape: str, num_tokens: int, horizon: int) -> bool:
        """No observation of this shape near ``num_tokens`` (the two grid
        points around it) in the last ``horizon`` observations."""
        self._check_shape(shape)
        (i0, _), (i1, _) = _bracket(max(int(num_tokens), 1))
        last = max(self._seen[shape][i0], self._seen[shape][i1])
        return last < 0 or self.observations - last > horizon

    def _curve(self, shape: str, n: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        have = self._weight[shape] > 0
        xs = _GRID[have].astype(np.float64)
        ys = np.maximum.accumulate(self._value[shape][have])  # monotonic in tokens
        out = np.interp(n, xs, ys)  # flat beyond the largest observed size
        # below the smallest observed size: proportional (optimistic)
        return np.asarray(np.where(n < xs[0], ys[0] * n / xs[0], out), dtype=np.float64)

    def _check_shape(self, shape: str) -> None:
        if shape not in SHAPES:
            raise KeyError(f"unknown step shape {shape!r}; known: {', '.join(SHAPES)}")

    # ------------------------------------------------------------ files

    def snapshot(self) -> dict[str, Any]:
        """The learned curves as JSON-able data: per shape, the observed
        grid points' tokens, milliseconds and observation weights."""
        shapes = {}
        for s in SHAPES:
            have = self._weight[s] > 0
            shapes[s] = {
                "tokens": _GRID[have].tolist(),
                "ms": (1e3 * self._value[s][have]).round(4).tolist(),
                "weight": self._weight[s][have].round(2).tolist(),
            }
        return {"format": "arctic-step-cost/1", "shapes": shapes}

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any], **kwargs: Any) -> StepCostModel:
        """A model holding a :meth:`snapshot`'s curves (a measured cost curve)."""
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
                if t < 1 or not math.isfinite(v) or v <= 0 or w <= 0:
                    raise ValueError(f"step cost curve {shape!r}: bad point ({t}, {v} ms, {w})")
                i = int(np.searchsorted(_GRID, t))
                if i >= len(_GRID) or _GRID[i] != t:
                    # a hand-made curve: spread the point over the grid
                    model.observe(shape, t, v / 1e3)
                    continue
                model._value[shape][i] = v / 1e3
                model._weight[shape][i] = w
        return model

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> StepCostModel:
        """:meth:`from_snapshot` of a JSON file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read step cost curve {path}: {e}") from e
        return cls.from_snapshot(data, **kwargs)


def _bracket(n: int) -> tuple[tuple[int, float], tuple[int, float]]:
    """The two grid points around ``n`` and their interpolation weights."""
    n = min(n, int(_GRID[-1]))
    i1 = int(np.searchsorted(_GRID, n))
    if _GRID[i1] == n:
        return (i1, 1.0), (i1, 0.0)
    i0 = i1 - 1
    w1 = (n - _GRID[i0]) / (_GRID[i1] - _GRID[i0])
    return (i0, float(1.0 - w1)), (i1, float(w1))
