"""Numerical warnings off inside the audits, the caller's settings for the code under audit.

Every number an audit computes is checked for finiteness, and a value beyond float64 makes
an infinite error or an IntegrationError, so NumPy's overflow and invalid-value warnings
inside the audits are noise (under ``-W error`` they would even escape as exceptions). The
implementation under audit is the caller's code: it runs with the caller's settings.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

__all__ = ["callers_errstate", "quiet_numerics"]

F = TypeVar("F", bound=Callable[..., Any])
_CALLER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("caller_errstate",
                                                                      default=None)


def quiet_numerics(fn: F) -> F:
    """Run ``fn`` with NumPy's floating-point warnings off, remembering the caller's."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _CALLER.set(_CALLER.get() or np.geterr())
        try:
            with np.errstate(all="ignore"):
                return fn(*args, **kwargs)
        finally:
            _CALLER.reset(token)

    return wrapper  # type: ignore[return-value]


def callers_errstate() -> np.errstate:
    """The floating-point settings the public entry point was called with."""
    return np.errstate(**(_CALLER.get() or np.geterr()))
