"""High-precision reference: forward sensitivities integrated in mpmath by Gragg–Bulirsch–Stoer
extrapolation (shared/MATH.md, "High precision" and "Forward sensitivity")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import mul
from typing import Any

import mpmath
import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._budget import MEMORY_BUDGET
from ._errors import IntegrationError, MethodUnavailable
from ._extrapolation import (
    NO_EXPONENT,
    Extrapolation,
    SolveStats,
    StepFailure,
    exponent,
    flat_values,
    from_fixed,
    max_columns,
    to_fixed,
)
from ._stiff_extrapolation import (
    LinearlyImplicitExtrapolation,
    SensitivityJacobianSystem,
    stiff_max_columns,
)

__all__ = [
    "CHECK_DIGITS",
    "DEFAULT_DIGITS",
    "DIGITS_MARGIN",
    "EXTRA_BITS",
    "GUARD_DIGITS",
    "MAX_AUGMENTED_SIZE",
    "MAX_MACRO_STEPS",
    "STIFF_GUARD_DIGITS",
    "TOLERANCE_DIGITS",
    "high_precision_gradient",
]

#: Significant digits of ``method="high_precision"`` unless ``digits`` says otherwise.
DEFAULT_DIGITS = 30
#: Working precision is ``digits + GUARD_DIGITS`` decimal digits: room for the rounding
#: errors of the extrapolation tableau and of a few thousand steps.
GUARD_DIGITS = 10
#: Extra working digits of the stiff (linearly implicit Euler) extrapolation: its
#: extrapolation amplifies rounding by about 10^(0.52 k) at order k, so orders near 20
#: need some 10 more digits than the tolerance.
STIFF_GUARD_DIGITS = 10
#: Bits beyond the working precision carried by the fixed-point arithmetic inside a macro
#: step (see :class:`~.Extrapolation`).
EXTRA_BITS = 64
#: A macro step is accepted when the extrapolation estimate of its local error is below
#: ``10**-(digits + TOLERANCE_DIGITS)`` relative to the solution (blockwise floor).
TOLERANCE_DIGITS = 2
#: The check solve runs ``CHECK_DIGITS`` decimal digits tighter, in both the local tolerance
#: and the working precision; its distance to the first solve is the error estimate.
CHECK_DIGITS = 3
#: The answer is refused (IntegrationError) unless the error estimate is at most
#: ``10**-(digits - DIGITS_MARGIN)``. The estimate measures the looser of the two solves,
#: whose local errors, amplified along the flow, may exceed its tolerance by a factor of up
#: to 10^(TOLERANCE_DIGITS + DIGITS_MARGIN); the answer is the tighter solve.
DIGITS_MARGIN = 2
#: Largest ``B * n * (1 + n + p)`` (state plus both sensitivity matrices, all samples)
#: integrated in pure-Python mpmath. The cost grows in proportion (the built-in ``tanh``
#: problem, 96 unknowns, takes about 2 s at 30 digits), so beyond it one gradient takes more
#: than a few seconds; float64 forward sensitivity with a tight rtol is the alternative.
MAX_AUGMENTED_SIZE = 200
#: Budget of attempted macro steps per sample and solve.
MAX_MACRO_STEPS = 100_000


class _Sensitivity:
    r"""The augmented forward-sensitivity right-hand side of one sample, in fixed point.

    The state is the flat list :math:`y = [z;\ \mathrm{vec}(S_z);\ \mathrm{vec}(S_\theta)]`
    with the matrices stored column by column, so column ``c`` of
    :math:`[S_z\ S_\theta]` is the slice ``y[n + c n : n + (c + 1) n]``:

    .. math:: \dot z = f, \qquad \dot S_z = J S_z, \qquad
              \dot S_\theta = J S_\theta + \partial f / \partial\theta

    Entries of block ``b`` (``z``, ``S_z``, ``S_theta``) are ints standing for
    ``y_i * 2**-shifts[b]``; ``z`` is handed to the compiled mpmath functions as mpf, and
    their values come back rounded to the block's fixed point (the Jacobian to its own).
    """

    def __init__(self, funcs: Any, theta: list, n: int, p: int, bits: int, prec: int,
                 stats: SolveStats):
        self.rhs_fn, self.jac_fn, self.jac_params_fn = funcs.rhs, funcs.jac_state, funcs.jac_params
        self.theta, self.n, self.p, self.stats = theta, n, p, stats
        self.bits, self.prec = bits, prec
        self.columns = [slice(n + c * n, n + (c + 1) * n) for c in range(n + p)]
        self.shifts = (0, 0, 0)

    def __call__(self, t: Any, u: list) -> list:
        n, p = self.n, self.p
        shift_z, _shift_s, shift_theta = self.shifts
        self.stats.nfev += 1
        try:
            z = [from_fixed(u[i], shift_z, self.prec) for i in range(n)]
            out = [to_fixed(v, shift_z) for v in flat_values(self.rhs_fn(z, self.theta, t))]
            jac = flat_values(self.jac_fn(z, self.theta, t))
            largest = max(exponent(v) for v in jac)
            shift_j = 1 if largest == NO_EXPONENT else self.bits - largest  # J = 0: any
            if shift_j < 1:
                raise StepFailure("the Jacobian of f exceeds the working range")
            fixed = [to_fixed(v, shift_j) for v in jac]
            rows = [fixed[r * n : (r + 1) * n] for r in range(n)]
            half = 1 << (shift_j - 1)
            for column in self.columns[:n]:  # J S_z
                col = u[column]
                out.extend((sum(map(mul, row, col)) + half) >> shift_j for row in rows)
            if p:
                jac_params = flat_values(self.jac_params_fn(z, self.theta, t))
                for c, column in enumerate(self.columns[n:]):  # J S_theta + df/dtheta
                    col = u[column]
                    out.extend(
                        ((sum(map(mul, row, col)) + half) >> shift_j)
                        + to_fixed(jac_params[r * p + c], shift_theta)
                        for r, row in enumerate(rows)
                    )
        except (ArithmeticError, ValueError, TypeError) as exc:
            # e.g. a division by zero or log of zero at a trial point of the midpoint rule
            raise StepFailure(f"{type(exc).__name__} evaluating f: {exc}") from exc
        return out


@dataclass
class _Solution:
    loss: Any
    grad_z0: list  # B lists of n
    grad_theta: list
    grad_times: list
    stats: SolveStats
    terms: dict


def _stepper(compiled: CompiledForm, funcs, theta_mp: list, blocks: list, tol: float,
             stats: SolveStats, working_digits: int, stiff: bool):
    """The integrator of one sample's sensitivity system: explicit GBS extrapolation in
    fixed point, or, for stiff dynamics, linearly implicit Euler extrapolation
    (numeric/_stiff_extrapolation.py) with the exact Jacobian of the system."""
    n, p = compiled.n, compiled.p
    prec = mpmath.mp.prec
    if stiff:
        system = SensitivityJacobianSystem(funcs, compiled.mpmath_second_derivatives(),
                                           theta_mp, n, p, stats, compiled.autonomous)
        guard = working_digits + int(math.log10(tol))
        return LinearlyImplicitExtrapolation(system, blocks, tol, stiff_max_columns(guard),
                                             stats, max_steps=MAX_MACRO_STEPS)
    rhs = _Sensitivity(funcs, theta_mp, n, p, prec + EXTRA_BITS, prec, stats)
    return Extrapolation(rhs, blocks, tol, max_columns(working_digits), stats,
                         bits=prec + EXTRA_BITS, prec=prec, max_steps=MAX_MACRO_STEPS)


def _real_finite(value: Any, gradient: list, t: float, i: int) -> Any:
    """``value`` (the loss at ``t_i``), after checking that it and its ``gradient`` are real
    and finite: a complex or infinite value means the loss is undefined on the path."""
    for v in (value, *gradient):
        if (isinstance(v, mpmath.mpc) and v.imag != 0) or not mpmath.isfinite(v):
            raise IntegrationError(
                f"the loss at t_{i} = {t:.6g} is not real and finite in high precision ({v}): "
                "it is undefined there (e.g. log or sqrt of a negative number) or infinite; "
                "keep the trajectory inside the loss's domain.",
                t=t,
                cause="loss undefined",
            )
    return value


def _loss_at(funcs: Any, z: list, y: list, t: float, i: int) -> tuple[list, Any]:
    """The loss gradient and value at ``z(t_i)``, real and finite, or ``IntegrationError``."""
    try:
        gradient = flat_values(funcs.loss_grad(z, y))
        value = funcs.loss(z, y)
    except (ArithmeticError, ValueError) as exc:  # log(0), 1/0 in mpmath
        raise IntegrationError(
            f"the loss at t_{i} = {t:.6g} cannot be evaluated in high precision "
            f"({type(exc).__name__}): it is undefined or infinite there; keep the trajectory "
            "inside the loss's domain.",
            t=t,
            cause="loss undefined",
        ) from exc
    return gradient, _real_finite(value, gradient, t, i)


def _solve(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray, *, data,
           tolerance_digits: int, working_digits: int, stiff: bool = False) -> _Solution:
    """One forward-sensitivity solve in mpmath at ``working_digits`` decimal digits with the
    local tolerance ``10**-tolerance_digits``; the gradient accumulated in mpmath."""
    funcs = compiled.mpmath_functions()
    n, p = compiled.n, compiled.p
    B, N = z0.shape[0], len(times) - 1
    stats = SolveStats()
    fdot = mpmath.fdot
    with mpmath.workdps(working_digits):
        mpf = mpmath.mpf
        theta_mp = [mpf(float(v)) for v in theta]
        ts = [mpf(float(v)) for v in times]
        tol = 10.0**-tolerance_digits
        blocks = [slice(0, n), slice(n, n + n * n), slice(n + n * n, n * (1 + n + p))]
        grad_theta = [mpf(0)] * p
        grad_times = [mpf(0)] * (N + 1)
        grad_z0 = []
        loss = mpf(0)
        # the same sums over magnitudes, with the loss not cancelled by its targets: the
        # scale the self-check measures against (near a fit the gradient is a small
        # difference of such terms)
        terms = {"loss": [mpf(0)], "z0": [], "theta": [mpf(0)] * p,
                 "times": [mpf(0)] * (N + 1)}
        for b in range(B):
            stepper = _stepper(compiled, funcs, theta_mp, blocks, tol, stats, working_digits,
                               stiff)
            z_start = [mpf(float(v)) for v in z0[b]]
            identity = [mpf(1) if r == c else mpf(0) for c in range(n) for r in range(n)]
            y = z_start + identity + [mpf(0)] * (n * p)
            g_z0 = [mpf(0)] * n
            t_z0 = [mpf(0)] * n
            for i in range(1, N + 1):
                y = stepper.integrate(y, ts[i - 1], ts[i])
                z = y[:n]
                y_i = [] if data is None else [mpf(float(v)) for v in data[i - 1][b]]
                g, value = _loss_at(funcs, z, y_i, float(times[i]), i)
                loss += value
                zero = [mpf(0)] * len(y_i)
                g_abs = [max(abs(a), abs(b)) for a, b in
                         zip(g, flat_values(funcs.loss_grad(z, zero)), strict=True)]
                terms["loss"][0] += max(abs(funcs.loss(z, y_i)), abs(funcs.loss(z, zero)))
                # dL/dz0 += S_z^T g, dL/dtheta += S_theta^T g: columns of S dotted with g
                for c in range(n):
                    column = y[n + c * n : n + (c + 1) * n]
                    g_z0[c] += fdot(column, g)
                    t_z0[c] += fdot([abs(v) for v in column], g_abs)
                for c in range(p):
                    column = y[n + (n + c) * n : n + (n + c + 1) * n]
                    grad_theta[c] += fdot(column, g)
                    terms["theta"][c] += fdot([abs(v) for v in column], g_abs)
                f_i = flat_values(funcs.rhs(z, theta_mp, ts[i]))
                grad_times[i] += fdot(g, f_i)
                terms["times"][i] += fdot(g_abs, [abs(v) for v in f_i])
            f_0 = flat_values(funcs.rhs(z_start, theta_mp, ts[0]))
            grad_times[0] -= fdot(g_z0, f_0)
            terms["times"][0] += fdot(t_z0, [abs(v) for v in f_0])
            grad_z0.append(g_z0)
            terms["z0"].extend(t_z0)
        return _Solution(loss, grad_z0, grad_theta, grad_times, stats, terms)


def _flat(solution: _Solution) -> dict[str, list]:
    return {
        "loss": [solution.loss],
        "z0": [v for row in solution.grad_z0 for v in row],
        "theta": list(solution.grad_theta),
        "times": list(solution.grad_times),
    }


def _relative_distance(answer: _Solution, check: _Solution, digits: int) -> float:
    r"""``max`` over every entry of every block (loss, z0, theta, times) of
    :math:`|x_j - x_{ref,j}| / \max(|x_{ref,j}|, T_j, 10^{-d} \max_k \max(|x_{ref,k}|,
    T_k))`, the audits' componentwise error measure, with ``check`` as the reference;
    ``T_j`` is the entry's sum over magnitudes, the scale a nearly cancelled entry is
    accurate to. The floor, ``d = digits`` below the block's own largest scale, is what
    the fixed-point arithmetic (one scale per block) resolves in an entry that is
    structurally zero."""
    a, c = _flat(answer), _flat(check)
    floor = mpmath.mpf(10) ** -digits
    worst = mpmath.mpf(0)
    for k in c:
        scales = [max(abs(y), abs(t)) for y, t in zip(c[k], check.terms[k], strict=True)]
        own = floor * max(scales, default=mpmath.mpf(0))
        for x, y, s in zip(a[k], c[k], scales, strict=True):
            denom = max(s, own)
            worst = max(worst, abs(x - y) / denom if denom > 0 else abs(x - y))
    return float(worst)


def _check_available(compiled: CompiledForm, batch: int) -> None:
    if compiled.non_analytic:
        names = ", ".join(compiled.non_analytic)
        raise MethodUnavailable(
            "high_precision",
            f"the dynamics or loss use the non-smooth function(s) {names}; extrapolation "
            "needs a smooth solution (an error expansion in even powers of h). Use "
            "'forward_sensitivity' with a tight rtol (e.g. rtol=1e-13, atol=1e-15) instead.",
        )
    n, p = compiled.n, compiled.p
    size = batch * n * (1 + n + p)
    if size > MAX_AUGMENTED_SIZE:
        instead = tight_reference(size) + " instead, or fewer samples"
        raise MethodUnavailable(
            "high_precision",
            f"the forward-sensitivity system has B * n * (1 + n + p) = {batch} * {n} * "
            f"(1 + {n} + {p}) = {size} unknowns, more than MAX_AUGMENTED_SIZE = "
            f"{MAX_AUGMENTED_SIZE} that pure-Python mpmath integrates in reasonable time. Use "
            f"{instead}.",
        )


def tight_reference(size: int) -> str:
    """What serves as a reference when the 30-digit one is out of reach, for a forward
    sensitivity system of ``size = B * n * (1 + n + p)`` unknowns: only something that will
    not refuse in turn (forward sensitivity within the memory budget)."""
    stages = 7 + 4
    if 8.0 * stages * size <= MEMORY_BUDGET:
        return "'forward_sensitivity' with a tight rtol (e.g. rtol=1e-13, atol=1e-15)"
    return ("'interpolated_adjoint' at a tight rtol, or an audit, which certifies it along "
            "random directions at this size")


def high_precision_gradient(
    compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray, *, digits: int,
    data: NDArray | None = None, stiff: bool = False,
) -> tuple[float, NDArray, NDArray, NDArray, dict]:
    r"""Loss and gradient from forward sensitivities integrated in mpmath to ``digits``
    significant digits: a reference for any smooth dynamics.

    Per sample, the forward-sensitivity system (shared/MATH.md)

    .. math:: \dot z = f(z, \theta, t), \qquad
              \dot S_z = J S_z,\ S_z(t_0) = I, \qquad
              \dot S_\theta = J S_\theta + \frac{\partial f}{\partial \theta},\
              S_\theta(t_0) = 0, \qquad J = \frac{\partial f}{\partial z}

    is integrated by Gragg–Bulirsch–Stoer extrapolation (modified midpoint rule with step
    numbers 2, 4, 6, ..., Aitken–Neville extrapolation in :math:`h^2`, ODEX order and
    step-size control) at ``digits + GUARD_DIGITS`` working digits, with macro steps that
    land on every observation time. With :math:`g_i = \nabla\ell(z_b(t_i))`:

    .. math:: \frac{dL}{dz_{0,b}} = \sum_i S_z(t_i)^T g_i, \qquad
              \frac{dL}{d\theta} = \sum_{i,b} S_\theta(t_i)^T g_i, \qquad
              \frac{dL}{dt_i} = \sum_b g_i^T f(z_b(t_i), \theta, t_i), \qquad
              \frac{dL}{dt_0} = -\sum_b \Big(\frac{dL}{dz_{0,b}}\Big)^T f(z_{0,b}, \theta, t_0)

    The solve is checked before it answers: it is repeated ``CHECK_DIGITS`` digits tighter
    (local tolerance and working precision) and the relative distance of the two results,
    entry by entry as in the audits' error measure, is ``info["error_estimate"]``. The tighter
    result is returned.

    Parameters
    ----------
    compiled : CompiledForm
        Compiled dynamics and loss; its ``mpmath_functions()`` are integrated.
    z0 : ndarray, shape (B, n)
    theta : ndarray, shape (p,)
    times : ndarray, shape (N+1,)
        Strictly increasing.
    digits : int
        Significant digits asked for (>= 16).

    Returns
    -------
    loss : float
    grad_z0 : ndarray, shape (B, n)
    grad_theta : ndarray, shape (p,)
    grad_times : ndarray, shape (N+1,)
    info : dict
        ``decimal``: the loss and every block as strings with ``digits`` significant
        digits (for reference files); ``digits``; ``error_estimate`` (relative, see
        above); ``macro_steps``,
        ``rejected_steps`` and ``nfev`` (augmented right-hand sides of one sample) summed
        over both solves; ``max_order`` of the extrapolation used.

    Raises
    ------
    MethodUnavailable
        The dynamics or loss are not smooth (``compiled.non_analytic``), or
        ``B * n * (1 + n + p)`` exceeds ``MAX_AUGMENTED_SIZE``.
    IntegrationError
        The solution became non-finite, complex or larger than float64 can hold, the step
        size underflowed, ``MAX_MACRO_STEPS`` ran out, or the error estimate exceeds
        ``10**-(digits - DIGITS_MARGIN)``. No number is returned from a failed solve.

    Notes
    -----
    Inside a macro step the arithmetic is fixed point on Python ints, one binary scale per
    block (``z``, ``S_z``, ``S_theta``) carrying ``EXTRA_BITS`` beyond the working
    precision below the block's largest entry, several times faster than mpf arithmetic
    (see :class:`~.Extrapolation`). Accuracy is therefore relative to each block's scale,
    as the error measure of the audits is; an entry far smaller than the rest of its block
    is accurate in absolute, not relative, terms.

    Explicit extrapolation needs step sizes of order ``1/|lambda|`` for an eigenvalue
    ``lambda`` of :math:`J`: stiff dynamics are slow here (``MAX_MACRO_STEPS`` bounds them).

    mpmath's precision is global: the solves run inside ``mpmath.workdps`` and restore it,
    but other threads using mpmath meanwhile would see the working precision.

    References
    ----------
    E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential Equations I:
    Nonstiff Problems", 2nd ed., Springer 1993, Section II.9 (extrapolation methods, the
    GBS algorithm and the ODEX order and step-size control).
    """
    z0 = np.asarray(z0, dtype=float)
    if z0.ndim != 2:
        raise ValueError(f"`z0` must have shape (B, n), got {z0.shape}.")
    _check_available(compiled, z0.shape[0])
    digits = int(digits)
    guard = GUARD_DIGITS + (STIFF_GUARD_DIGITS if stiff else 0)
    answer = _solve(compiled, z0, theta, times, data=data,
                    tolerance_digits=digits + TOLERANCE_DIGITS,
                    working_digits=digits + guard, stiff=stiff)
    tight = digits + TOLERANCE_DIGITS + CHECK_DIGITS
    check = _solve(compiled, z0, theta, times, data=data, tolerance_digits=tight,
                   working_digits=digits + guard + CHECK_DIGITS, stiff=stiff)
    with mpmath.workdps(digits + GUARD_DIGITS + CHECK_DIGITS):
        estimate = _relative_distance(answer, check, digits)
    if not estimate <= 10.0 ** -(digits - DIGITS_MARGIN):
        raise IntegrationError(
            f"high-precision solve did not reach {digits} digits: two solves "
            f"{CHECK_DIGITS} digits apart differ by {estimate:.2e} (relative), more than "
            f"10^-{digits - DIGITS_MARGIN}; the problem may be too ill-conditioned on this "
            "time span. Ask for more digits or shorten the span.",
            t=float(times[-1]),
            cause="error estimate above the requested digits",
        )
    stats = (answer.stats, check.stats)
    with mpmath.workdps(digits + GUARD_DIGITS + CHECK_DIGITS):
        def text(v):  # `digits` significant digits, always in scientific notation
            return mpmath.nstr(v, digits, strip_zeros=False, min_fixed=1, max_fixed=0)

        decimal = {
            "loss": text(check.loss),
            "z0": tuple(tuple(text(v) for v in row) for row in check.grad_z0),
            "theta": tuple(text(v) for v in check.grad_theta),
            "times": tuple(text(v) for v in check.grad_times),
        }
    info = {
        "decimal": decimal,
        "digits": digits,
        "error_estimate": estimate,
        "macro_steps": sum(s.accepted for s in stats),
        "rejected_steps": sum(s.rejected for s in stats),
        "nfev": sum(s.nfev for s in stats),
        "max_order": max(s.max_order for s in stats),
        "integrator": ("linearly implicit Euler extrapolation (stiff)" if stiff else
                       "Gragg-Bulirsch-Stoer extrapolation"),
    }
    return (
        float(check.loss),
        np.array([[float(v) for v in row] for row in check.grad_z0], dtype=float),
        np.array([float(v) for v in check.grad_theta], dtype=float),
        np.array([float(v) for v in check.grad_times], dtype=float),
        info,
    )
