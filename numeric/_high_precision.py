"""Placeholder replaced by the high-precision reference (work in progress)."""

from ._errors import MethodUnavailable

DEFAULT_DIGITS = 30


def high_precision_gradient(compiled, z0, theta, times, *, digits):
    raise MethodUnavailable("high_precision", "not built yet")
