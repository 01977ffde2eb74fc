r"""A directional derivative of the loss to about 30 digits, fast enough for a network: the
tangent (forward-mode) system integrated in double-double arithmetic by Gragg–Bulirsch–Stoer
extrapolation (MATH.md, "Directional checks").

For a direction :math:`v = (v_{z_0}, v_\theta, v_t)` the state and its tangent,

.. math:: \dot z = f(z, \theta, t),\ z(t_0) = z_0, \qquad
          \dot\delta = \frac{\partial f}{\partial z}\delta + \frac{\partial f}{\partial
          \theta} v_\theta,\ \delta(t_0) = v_{z_0} - f(z_0, \theta, t_0)\, v_{t_0},

give :math:`v^T g = \sum_{i \ge 1} \sum_b \nabla\ell(z_b(t_i))^T \delta_b(t_i) + \sum_{i
\ge 1} v_{t_i} \sum_b \nabla\ell(z_b(t_i))^T f(z_b(t_i), \theta, t_i)`, :math:`n` extra
unknowns per sample instead of the :math:`n (n + p)` of forward sensitivities. (The
:math:`v_{t_0}` term enters through :math:`\delta(t_0)`: :math:`dL/dt_0 = -(dL/dz_0)^T f(z_0,
\theta, t_0)`.)
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from symbolic import scalar_loss_gradient, targets_by_name

from ._checks import check_problem, observed
from ._dd_dynamics import dynamics_evaluator
from ._dd_extrapolation import DDExtrapolation
from ._dd_program import METHOD, ExpressionProgram
from ._double_double import DD, sum_along, to_decimal
from ._errors import InputError, IntegrationError, MethodUnavailable
from ._extrapolation import SolveStats, max_columns

__all__ = [
    "CHECK_DIGITS",
    "DEFAULT_DIGITS",
    "DIGITS_MARGIN",
    "FLOOR_DIGITS",
    "MAX_DIGITS",
    "MAX_MACRO_STEPS",
    "TOLERANCE_DIGITS",
    "high_precision_directional",
]

#: Significant digits asked for unless ``digits`` says otherwise.
DEFAULT_DIGITS = 30
#: Tightest local tolerance a solve may run at, as a power of ten: below about 1e-31 the
#: rounding noise of double-double arithmetic (unit roundoff 1.2e-32), amplified by the
#: extrapolation tableau, dominates the error estimate of a macro step.
FLOOR_DIGITS = 31
#: A macro step is accepted when its estimated local error is below
#: ``10**-(digits + TOLERANCE_DIGITS)`` relative to the solution (normwise per sample and
#: block).
TOLERANCE_DIGITS = 0
#: The check solve runs ``CHECK_DIGITS`` decimal digits tighter, as the mpmath reference's
#: does, but never beyond ``FLOOR_DIGITS``; its distance to the first solve is the error
#: estimate.
CHECK_DIGITS = 3
#: Most digits that can be certified: the check solve must run at least one digit tighter
#: than the answer and no tighter than ``FLOOR_DIGITS``.
MAX_DIGITS = FLOOR_DIGITS - TOLERANCE_DIGITS - 1
#: The answer is refused (IntegrationError) unless the error estimate is at most
#: ``10**-(digits - DIGITS_MARGIN)``, as for the mpmath reference: the estimate measures
#: the looser solve, whose local errors amplified along the flow may exceed its tolerance
#: by this margin; the answer is the tighter solve.
DIGITS_MARGIN = 2
#: Budget of attempted macro steps per solve.
MAX_MACRO_STEPS = 20_000


@dataclass
class _Solution:
    value: DD  # 0-d
    terms: float  # sum of the magnitudes of the terms of the value
    stats: SolveStats


class _LossGradient:
    r""":math:`\nabla_z \ell(z, y)` in double-double, per sample, from the exact SymPy
    gradient of the per-observation loss."""

    def __init__(self, compiled: Any, targets: Any):
        dynamics = compiled.dynamics
        gradient = scalar_loss_gradient(dynamics, compiled.loss_expr, targets)
        self.n = dynamics.n
        self.program = ExpressionProgram(gradient.exprs, [*gradient.state, *gradient.targets],
                                         "the loss gradient")

    def __call__(self, z: DD, y: NDArray | None) -> DD:
        """``(B, n)`` at the states ``z`` (DD ``(B, n)``) and targets ``y`` ``(B, k)``."""
        B = z.shape[0]
        values = [z[:, i] for i in range(self.n)]
        if y is not None:
            values += [DD(np.asarray(y[:, c], dtype=float)) for c in range(y.shape[1])]
        out = self.program(values)
        hi, lo = np.zeros((B, self.n)), np.zeros((B, self.n))
        for i, (value, _) in enumerate(out):
            hi[:, i], lo[:, i] = value.hi, value.lo
        return DD(hi, lo)


def _symbolic(compiled: Any) -> None:
    """Refuse a compiled form that does not carry its SymPy dynamics and loss, or whose
    dynamics or loss are not smooth."""
    if not hasattr(compiled, "dynamics") or not hasattr(compiled, "loss_expr"):
        raise MethodUnavailable(
            METHOD, f"it reads the SymPy dynamics and loss, which {type(compiled).__name__} "
            "does not carry; pass a symbolic.Dynamics or a form built by compile_problem.")
    if compiled.non_analytic:
        raise MethodUnavailable(
            METHOD,
            f"the dynamics or loss use the non-smooth function(s) "
            f"{', '.join(compiled.non_analytic)}; extrapolation needs a smooth solution (an "
            "error expansion in even powers of h). Use 'forward_sensitivity' with a tight "
            "rtol instead.",
        )


def _direction(value: Any, name: str, shape: tuple[int, ...], alt: tuple[int, ...] | None
               ) -> NDArray:
    """A direction block as a float array of ``shape`` (``alt`` accepted as well)."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`{name}` must be an array of real numbers, got {value!r}.") from exc
    if alt is not None and array.shape == alt:
        array = array.reshape(shape)
    if array.shape != shape:
        expected = f"{shape}" + (f" or {alt}" if alt is not None else "")
        raise InputError(f"`{name}` must have shape {expected} (like the input it perturbs), "
                         f"got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise InputError(f"`{name}` contains inf or nan; give finite values.")
    return array.copy()


def _check_digits(digits: Any) -> int:
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 16:
        raise InputError(
            f"`digits` must be an integer >= 16 (more than float64 gives), got {digits!r}.")
    if digits > MAX_DIGITS:
        raise MethodUnavailable(
            METHOD,
            f"{digits} digits were asked for, but double-double arithmetic (106 bits, unit "
            f"roundoff 1.2e-32) certifies at most {MAX_DIGITS}: its check solve must run at "
            f"least one digit tighter, and no tighter than 1e-{FLOOR_DIGITS}, where rounding "
            "noise takes over. "
            "Use gradient(..., method='high_precision', digits=...) (mpmath, any precision, "
            "small problems) instead.",
        )
    return int(digits)


def _solve(bound, values, loss_grad, z0, times, v_z0, v_times, data, tol) -> _Solution:
    """One solve of the state and tangent at local tolerance ``tol``."""
    n = z0.shape[1]
    ts = [DD(np.float64(t)) for t in times]
    stats = SolveStats()
    z_start = DD(z0)
    delta0 = DD(v_z0)
    if v_times[0] != 0:
        delta0 = delta0 - values(ts[0], z_start, None)[0] * float(v_times[0])

    stepper = DDExtrapolation(bound.augmented, [slice(0, n), slice(n, 2 * n)], tol,
                              max_columns(-int(math.log10(tol)) + 4), stats,
                              max_steps=MAX_MACRO_STEPS)
    y = DD(np.hstack([z_start.hi, delta0.hi]), np.hstack([z_start.lo, delta0.lo]))
    parts: list[DD] = []
    terms = 0.0
    for i in range(1, len(times)):
        y = stepper.integrate(y, ts[i - 1], ts[i])
        z, delta = y[:, :n], y[:, n:]
        targets = observed(data, i)
        g = loss_grad(z, targets)
        g_abs = np.abs(g.hi)
        if targets is not None:
            g_abs = np.maximum(g_abs, np.abs(loss_grad(z, np.zeros_like(targets)).hi))
        parts.append(sum_along((g * delta).reshape(-1)))
        terms += float(np.sum(g_abs * np.abs(delta.hi)))
        if v_times[i] != 0:
            f = values(ts[i], z, None)[0]
            parts.append(sum_along((g * f).reshape(-1)) * float(v_times[i]))
            terms += abs(float(v_times[i])) * float(np.sum(g_abs * np.abs(f.hi)))
    value = parts[0]
    for part in parts[1:]:
        value = value + part
    return _Solution(value, terms, stats)


def high_precision_directional(
    compiled_or_dynamics: Any,
    loss: Any,
    z0: Any,
    theta: Any,
    times: Any,
    v_z0: Any,
    v_theta: Any,
    v_times: Any,
    *,
    digits: int = DEFAULT_DIGITS,
    data: Any = None,
    targets: Any = (),
) -> tuple[tuple[float, float], float, dict]:
    r"""The directional derivative :math:`v^T g` of the loss to ``digits`` significant
    digits (at most ``MAX_DIGITS`` = 30), for networks as for small problems.

    The state and tangent systems (module docstring) are integrated together in
    double-double arithmetic by Gragg–Bulirsch–Stoer extrapolation, every sample of the
    batch on common macro steps landing on every observation time, at the local tolerance
    ``10**-(digits + TOLERANCE_DIGITS)``. The tangent of ``f`` is computed in forward mode
    (dual numbers through the expressions, or the matrix-form graph with exactly split
    double-double parameter products), never as a Jacobian.

    The solve is checked before it answers, like ``gradient(method="high_precision")``: it
    is repeated ``CHECK_DIGITS`` digits tighter (at most down to ``10**-FLOOR_DIGITS``,
    so one digit at 30 digits) and the distance of the two values,
    relative to :math:`\max(|v^T g|, \text{terms})` (``terms`` the sum of the magnitudes
    of the products summed into :math:`v^T g`, the scale a nearly cancelled value is
    accurate to), is the error estimate. The tighter value is returned.

    Parameters
    ----------
    compiled_or_dynamics : symbolic.Dynamics or compiled form
        A compiled form must carry its ``dynamics`` and ``loss_expr`` (those of
        ``compile_problem`` do); then ``loss`` and ``targets`` are ignored.
    loss : sympy.Expr
        The per-observation loss (with a Dynamics).
    z0 : array_like, shape (B, n) or (n,)
    theta : array_like, shape (p,)
    times : array_like, shape (N+1,)
    v_z0 : array_like, shape of ``z0``
    v_theta : array_like, shape (p,)
    v_times : array_like, shape (N+1,)
        The direction, block by block.
    digits : int
        Significant digits asked for, 16 to ``MAX_DIGITS``.
    data : array_like, shape (N, B, k) or (N, k), optional
        Target values of the loss at ``times[1:]``.
    targets : sequence of Symbols, optional
        The loss's data symbols (with a Dynamics).

    Returns
    -------
    value : (float, float)
        :math:`v^T g` as the double-double pair ``(hi, lo)``: ``hi`` is the nearest float.
    error_estimate : float
        Relative, as above (also ``info["error_estimate"]``).
    info : dict
        ``decimal`` (the value with ``digits`` significant digits), ``digits``,
        ``error_estimate``, ``term_scale``, ``macro_steps``, ``rejected_steps``, ``nfev``
        (right-hand sides of the whole batch, state and tangent) and ``max_order`` summed
        or maximised over both solves, ``seconds`` (wall time of both solves).

    Raises
    ------
    InputError
        For malformed inputs (named).
    MethodUnavailable
        Non-smooth dynamics or loss, a construct the double-double evaluator does not
        support, or ``digits > MAX_DIGITS``.
    IntegrationError
        The solution became non-finite or left the double-double range, the step size
        underflowed, ``MAX_MACRO_STEPS`` ran out, or the error estimate exceeds
        ``10**-(digits - DIGITS_MARGIN)``. No number is returned from a failed solve.

    Notes
    -----
    Cost: both solves together take about 4,900 right-hand sides of the whole batch at 30
    digits, 2,300 at 25 and 1,600 at 20 for the two-layer tanh network of width 64 with
    ``n = 16``, ``B = 256`` and three observations on ``[0, 1]``: about 22, 10 and 6 s of
    one core (``bench/bench_directional_hp.py``). The last digit is the expensive one: at
    30 digits the check solve runs where double-double rounding noise sets the step size.

    Accuracy is relative to the scale of each block (state, tangent) of each sample, as the
    audits' error measure is: parameter products are accurate to a few units of
    :math:`2^{-106}` times :math:`\max_k |x_k| \sum_k |w_{jk}|` per entry (normwise in
    the row), which is what the extrapolation's error control assumes.

    References
    ----------
    E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential Equations I",
    2nd ed., Springer 1993, II.9 (GBS, ODEX control). T. J. Dekker, "A floating-point
    technique for extending the available precision", Numer. Math. 18 (1971).
    """
    checked = check_problem(compiled_or_dynamics, loss, z0, theta, times, targets=targets,
                            data=data)
    compiled, z0, theta, times = checked.compiled, checked.z0, checked.theta, checked.times
    digits = _check_digits(digits)
    _symbolic(compiled)
    B, n = z0.shape
    v_z0 = _direction(v_z0, "v_z0", (B, n), (n,) if checked.single else None)
    v_theta = _direction(v_theta, "v_theta", (compiled.p,), None)
    v_times = _direction(v_times, "v_times", (len(times),), None)
    evaluator = dynamics_evaluator(compiled.dynamics)
    bound, values = evaluator.bind(theta, v_theta), evaluator.bind(theta)
    loss_grad = _LossGradient(compiled, targets_by_name(compiled.loss_expr,
                                                        getattr(compiled, "targets", ())))
    start = time.perf_counter()
    solves = []
    check_digits = min(digits + TOLERANCE_DIGITS + CHECK_DIGITS, FLOOR_DIGITS)
    for tolerance_digits in (digits + TOLERANCE_DIGITS, check_digits):
        tol = 10.0 ** -tolerance_digits
        solves.append(_solve(bound, values, loss_grad, z0, times, v_z0, v_times,
                             checked.data, tol))
    seconds = time.perf_counter() - start
    answer, check = solves
    estimate = _estimate(answer, check)
    if not estimate <= 10.0 ** -(digits - DIGITS_MARGIN):
        raise IntegrationError(
            f"high-precision directional solve did not reach {digits} digits: two solves "
            f"{check_digits - digits - TOLERANCE_DIGITS} digit(s) apart differ by "
            f"{estimate:.2e} (relative), more than "
            f"10^-{digits - DIGITS_MARGIN}; the problem may be too ill-conditioned on this "
            "time span for double-double arithmetic. Ask for fewer digits, shorten the "
            "span, or use method 'high_precision' (mpmath) on a small problem.",
            t=float(times[-1]), cause="error estimate above the requested digits")
    stats = (answer.stats, check.stats)
    info = {
        "decimal": to_decimal(check.value, digits),
        "digits": digits,
        "error_estimate": estimate,
        "term_scale": check.terms,
        "macro_steps": sum(s.accepted for s in stats),
        "rejected_steps": sum(s.rejected for s in stats),
        "nfev": sum(s.nfev for s in stats),
        "max_order": max(s.max_order for s in stats),
        "seconds": seconds,
    }
    return (float(check.value.hi), float(check.value.lo)), estimate, info


def _estimate(answer: _Solution, check: _Solution) -> float:
    """``|answer - check| / max(|check|, terms)`` (the difference itself when both are
    zero)."""
    diff = abs(float((answer.value - check.value).hi))
    scale = max(abs(float(check.value.hi)), check.terms)
    return diff / scale if scale > 0 else diff
