"""Result tables: Markdown tables, number formats, medians and ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def fmt(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals; ``n/a`` for NaN."""
    return "n/a" if x != x else f"{x:.{digits}f}"  # x != x: NaN


def ratio(value: float, base: float, digits: int = 2) -> str:
    """``value / base`` as ``1.23x``; ``n/a`` when ``base`` is 0 or either is NaN."""
    if not base or math.isnan(value) or math.isnan(base):
        return "n/a"
    return f"{value / base:.{digits}f}x"


def median(samples: Iterable[float]) -> float:
    """The median (NaN when there are no samples)."""
    xs = list(samples)
    return statistics.median(xs) if xs else float("nan")


def row(cells: Iterable[object]) -> str:
    """One Markdown table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def rule(align: str) -> str:
    """The header rule for columns aligned ``l`` (left), ``r`` (right) or
    ``c`` (centre), one letter per column: ``rule("lr") == "|---|---:|"``."""
    return "|" + "".join(_ALIGN[a] + "|" for a in align)


def table(
    header: Sequence[object], rows: Iterable[Sequence[object]], align: str | None = None
) -> list[str]:
    """A Markdown table as lines: header, rule, rows. ``align`` as for
    :func:`rule`; the default is the first column left, the others right."""
    if align is None:
        align = "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns but alignment {align!r}")
    return [row(header), rule(align), *(row(r) for r in rows)]
