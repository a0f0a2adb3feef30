"""The one way a patch replaces something in vLLM.

:func:`wrap` replaces ``owner.name`` (a function of a module, or a method,
staticmethod or classmethod of a class) with ``make(original)``, and:

* marks the replacement with :data:`FLAG`, so applying a patch twice (vLLM
  loads plugins once per process, but tests and workers may apply again) is
  a no-op;
* refuses a vLLM whose callable has another shape than the one the patch was
  written against: ``params`` lists the parameter names expected (all of
  them, or the first ones with ``prefix=True``), and AttributeError names the
  expected and the found ones, before anything is replaced;
* keeps vLLM's original as :data:`ORIGINAL` on the replacement, for tests and
  for undoing a patch by hand.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

FLAG = "__arctic_inference_patch__"  # True on every replacement made here
ORIGINAL = "__wrapped_original__"  # vLLM's object the replacement stands for


def is_patched(obj: Any) -> bool:
    return getattr(obj, FLAG, False) is True


def _resolve(owner: Any, name: str) -> tuple[type | None, Any, str]:
    """(staticmethod, classmethod or None; the function or object; its dotted name)."""
    if isinstance(owner, type):
        raw = inspect.getattr_static(owner, name)
        what = f"{owner.__module__}.{owner.__qualname__}.{name}"
    else:
        raw = getattr(owner, name)
        what = f"{getattr(owner, '__name__', owner)}.{name}"
    if isinstance(raw, (staticmethod, classmethod)):
        return type(raw), raw.__func__, what
    return None, raw, what


def _check_params(what: str, fn: Any, params: Sequence[str], prefix: bool) -> None:
    found = list(inspect.signature(fn).parameters)
    expected = list(params)
    if (found[: len(expected)] if prefix else found) != expected:
        shape = f"starting with {expected}" if prefix else f"{expected}"
        raise AttributeError(
            f"{what}: this vLLM's parameters are {found}, the patch expects {shape}"
        )


def check(owner: Any, name: str, params: Sequence[str], *, prefix: bool = False) -> None:
    """The shape check of :func:`wrap` alone (for a patch that replaces several
    things and wants all of them checked before it replaces any). Nothing to
    check on what is already patched."""
    _, original, what = _resolve(owner, name)
    if not is_patched(original):
        _check_params(what, original, params, prefix)


def wrap(
    owner: Any,
    name: str,
    make: Callable[[Any], Any],
    *,
    params: Sequence[str] | None = None,
    prefix: bool = False,
) -> Any:
    """Replace ``owner.name`` with ``make(original)``; returns the replacement
    in place (the function, for a static or class method). Idempotent.

    ``params``: the parameter names the replacement relies on (None: it
    passes every argument through). For a function replacing a function,
    the replacement gets the original's name, docstring and signature
    (``functools.update_wrapper``); a class replacement keeps its own."""
    kind, original, what = _resolve(owner, name)
    if is_patched(original):
        return original
    if params is not None:
        _check_params(what, original, params, prefix)
    replacement = make(original)
    if replacement is original:
        raise ValueError(f"{what}: make() returned the original; nothing to patch")
    if inspect.isfunction(original) and inspect.isfunction(replacement):
        functools.update_wrapper(replacement, original)
    setattr(replacement, FLAG, True)
    setattr(replacement, ORIGINAL, original)
    setattr(owner, name, kind(replacement) if kind is not None else replacement)
    return replacement
