"""Argument checks shared by the whole core (private).

One wording for each condition, so every part reports a bad argument the
same way:

- wrong type: ``TypeError("{name} must be an int, got {type}")``;
- out of range: ``ValueError("{name} must be >= {minimum}, got {value}")``,
  ``"... must be <= {maximum} ..."``, or with both bounds
  ``"... must be within [{minimum}, {maximum}], got {value}"``.

``bool`` is never accepted as an int (``True`` is an ``int`` in Python, but a
flag passed where a count is expected is a bug). Callers whose errors are all
``ValueError`` (config files, shape-only checks) use :func:`is_int` and raise
their own message.
"""

from __future__ import annotations

import operator
from typing import SupportsIndex, TypeGuard, cast

__all__ = ["check_index", "check_int", "check_positive", "is_int"]


def is_int(value: object) -> TypeGuard[int]:
    """True for a Python ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(name: str, value: int, minimum: int | None, maximum: int | None) -> int:
    if minimum is not None and maximum is not None:
        if not minimum <= value <= maximum:
            raise ValueError(f"{name} must be within [{minimum}, {maximum}], got {value}")
    elif minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    elif maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_int(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    types: tuple[type, ...] = (int,),
) -> int:
    """``value`` as an ``int``, checked against the inclusive bounds.

    Args:
        name: the argument's name, as the caller knows it (the message starts with it).
        value: what was passed.
        minimum, maximum: inclusive bounds; ``None`` for none.
        types: accepted types (``bool`` is always refused); the suffix cache
            also accepts numpy integers.

    Raises:
        TypeError: ``value`` is a ``bool`` or not an instance of ``types``.
        ValueError: ``value`` is outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return _check_range(name, operator.index(cast(SupportsIndex, value)), minimum, maximum)


def check_index(
    name: str, value: object, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Like :func:`check_int`, but accepts anything with ``__index__`` (numpy
    integers, 0-d integer tensors), for values that come from arrays."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        n = operator.index(cast(SupportsIndex, value))
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    return _check_range(name, n, minimum, maximum)


def check_positive(name: str, value: float) -> float:
    """``value``, which must be a number > 0 (NaN is refused too).

    Raises:
        ValueError: ``value`` is not > 0.
    """
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value
