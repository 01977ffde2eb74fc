"""The NumPy printer the compiled functions are generated with.

SymPy's NumPy printer writes ``And(a, b, c)`` as ``logical_and.reduce((a, b, c))``, which
builds one array from its arguments and fails when a condition on the state (an array, one
entry per sample) meets a condition on a parameter or the time (a scalar): the derivative of
``Max(1, t, x)`` is such a ``Piecewise``. Nested binary ``logical_and(a, logical_and(b, c))``
broadcasts instead.
"""

from __future__ import annotations

from sympy.printing.numpy import NumPyPrinter

__all__ = ["BroadcastingNumPyPrinter", "numpy_printer"]


class BroadcastingNumPyPrinter(NumPyPrinter):
    """A NumPy printer whose ``And`` and ``Or`` broadcast scalars against arrays."""

    def _nested(self, ufunc: str, args) -> str:
        name = self._module_format(f"{self._module}.{ufunc}")
        printed = [self._print(arg) for arg in args]
        out = printed[-1]
        for term in reversed(printed[:-1]):
            out = f"{name}({term}, {out})"
        return out

    def _print_And(self, expr) -> str:
        return self._nested("logical_and", expr.args)

    def _print_Or(self, expr) -> str:
        return self._nested("logical_or", expr.args)


def numpy_printer() -> BroadcastingNumPyPrinter:
    """A fresh printer with the settings ``lambdify`` gives its own NumPy printer (a printer
    class passed to ``lambdify`` would be used with fully qualified module names, which its
    namespace does not hold)."""
    return BroadcastingNumPyPrinter({"fully_qualified_modules": False, "inline": True,
                                     "allow_unknown_functions": True, "user_functions": {}})
