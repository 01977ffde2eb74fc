"""Errors raised by the numerics."""

from __future__ import annotations

__all__ = ["InputError", "IntegrationError", "MethodUnavailable", "UnresolvedGrid"]


class InputError(ValueError):
    """An argument of a public function is malformed; the message says how to fix it."""


class IntegrationError(RuntimeError):
    """A solve failed: the state became non-finite, the step size underflowed, or the step
    budget ran out. ``t`` is the time reached and ``cause`` a short phrase saying why."""

    def __init__(self, message: str, *, t: float, cause: str):
        super().__init__(message)
        self.t = t
        self.cause = cause


class MethodUnavailable(RuntimeError):
    """A gradient method cannot serve this problem (e.g. ``exact`` on nonlinear dynamics)."""

    def __init__(self, method: str, reason: str):
        super().__init__(f"method {method!r} is unavailable for this problem: {reason}")
        self.method = method
        self.reason = reason


class UnresolvedGrid(MethodUnavailable):
    """A continuous method on a fixed grid that does not resolve the solution (doubling the
    steps changes it by as much as its own size): its numbers would mean nothing."""
