r"""torchdiffeq's explicit Adams–Bashforth map (``method="explicit_adams"``) and its exact
derivative by complex step.

A multistep method is no Runge–Kutta tableau, so it has no solver of ours; but the
discrete map a library backpropagates through is still a function of ``z0``, ``theta`` and
the times, and its exact derivative is what backpropagation must equal to rounding. On the
grid of ``steps`` equal steps per observation interval (:math:`t_k = t_j + s_k \Delta_j`,
:math:`h_k = t_{k+1} - t_k`), with :math:`f_k = f(z_k, \theta, t_k)` and the history
:math:`f_k, f_{k-1}, \dots` of at most ``MAX_HISTORY`` values:

- while fewer than ``START_HISTORY`` values are known, one step of Kutta's 3/8 rule
  (:math:`k_1 = f_k`);
- then :math:`z_{k+1} = z_k + h_k \sum_{j<q} \beta_{q,j} f_{k-j}` with :math:`q` the
  history's length: the Adams–Bashforth formula of order :math:`q` for equal steps, its
  order rising from 3 to 11 (the coefficients assume equal steps whatever the grid).

This is torchdiffeq's ``AdamsBashforth`` with its default ``max_order = 12`` (read from
torchdiffeq/_impl/fixed_adams.py); the tests hold its backpropagation to this map's
derivative at rounding. The coefficients are computed here exactly,
:math:`\beta_{q,j} = \frac{(-1)^j}{j!\,(q-1-j)!} \int_0^1 \prod_{i \ne j} (u + i)\,du`
(Hairer, Nørsett, Wanner, *Solving ODEs I*, III.1).
"""

from __future__ import annotations

import functools
from collections import deque
from fractions import Fraction
from math import factorial

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._budget import check_per_entry
from ._checks import observed
from ._discrete import COMPLEX_STEP, COMPLEX_STEP_CHECK
from ._errors import IntegrationError, MethodUnavailable

__all__ = ["ADAMS_BASHFORTH", "MAX_HISTORY", "ROUNDING_SAFETY", "START_HISTORY",
           "adams_bashforth_complex_step", "adams_bashforth_reference", "bashforth_coefficients"]

#: Our name of torchdiffeq's ``explicit_adams`` map (``reference="discrete"``).
ADAMS_BASHFORTH = "adams_bashforth"
#: History length from which the Adams–Bashforth formula replaces the Runge–Kutta start
#: (torchdiffeq's ``_MIN_ORDER - 1``).
START_HISTORY = 3
#: Most past values of ``f`` the formula uses (torchdiffeq's default ``max_order - 1``).
MAX_HISTORY = 11
#: How far the complex steps ``COMPLEX_STEP`` and ``COMPLEX_STEP_CHECK`` may disagree
#: (relative): at a branch point they disagree at O(1), while the map's amplified rounding
#: (up to about 1e-8 on smooth problems at 32 steps per interval) must not count as one;
#: the Runge–Kutta check's ``ANALYTIC_AGREEMENT`` (1e-8) is too tight for it.
MULTISTEP_AGREEMENT = 1e-4
#: Two roundings of the map differ by an amount that varies with the order of operations:
#: a comparison allows ten times the distance of the two orders measured.
ROUNDING_SAFETY = 10.0


@functools.cache
def bashforth_coefficients(order: int) -> tuple[float, ...]:
    r""":math:`\beta_{q,0..q-1}` of the ``order``-step Adams–Bashforth formula, newest value
    first (``(3/2, -1/2)`` for order 2), exact fractions rounded once."""
    out = []
    for j in range(order):
        poly = [Fraction(1)]  # coefficients of prod_{i != j} (u + i), lowest power first
        for i in range(order):
            if i == j:
                continue
            shifted = [Fraction(0), *poly]  # u * poly
            for power, value in enumerate(poly):
                shifted[power] += i * value
            poly = shifted
        integral = sum(value / (power + 1) for power, value in enumerate(poly))
        sign = -1 if j % 2 else 1
        out.append(float(sign * integral / (factorial(j) * factorial(order - 1 - j))))
    return tuple(out)


def _grid(times: NDArray, steps: int) -> list[tuple[int, object, object]]:
    """``(interval, t_k, t_{k+1})`` of every step, as torchdiffeq's grid from
    ``t_j + s_k (t_{j+1} - t_j)``: the interval's ends are the observation times."""
    fractions = np.linspace(0.0, 1.0, steps + 1)
    out = []
    for j in range(len(times) - 1):
        delta = times[j + 1] - times[j]
        points = [times[j] + fractions[k] * delta for k in range(steps)] + [times[j + 1]]
        out.extend((j, points[k], points[k + 1]) for k in range(steps))
    return out


def adams_bashforth_loss(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                         times: NDArray, steps: int, *, data=None,
                         oldest_first: bool = False) -> NDArray:
    """Each sample's loss along the map (module docstring), in the dtype of the inputs
    (complex flows through). ``oldest_first`` sums the formula's terms in the other order:
    the same map in exact arithmetic, another one in rounding."""
    dtype = np.result_type(z0, theta, times)
    rhs = compiled.kernel(np.asarray(theta, dtype=dtype)).rhs
    z = np.asarray(z0, dtype=dtype)
    history: deque = deque(maxlen=MAX_HISTORY)
    sample_loss = np.zeros(z.shape[0], dtype=dtype)
    grid = _grid(np.asarray(times, dtype=dtype), steps)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging map is reported below
        return _run(compiled, rhs, z, history, sample_loss, grid, times, data, oldest_first)


def _run(compiled, rhs, z, history, sample_loss, grid, times, data, oldest_first=False):
    for index, (j, t0, t1) in enumerate(grid):
        h = t1 - t0
        f0 = rhs(z, t0)
        history.appendleft(f0)
        if len(history) < START_HISTORY:  # Kutta's 3/8 rule, k1 = f0
            k2 = rhs(z + h * f0 / 3, t0 + h / 3)
            k3 = rhs(z + h * (k2 - f0 / 3), t0 + 2 * h / 3)
            k4 = rhs(z + h * (f0 - k2 + k3), t1)
            z = z + (f0 + 3 * (k2 + k3) + k4) * h / 8
        else:
            terms = list(zip(bashforth_coefficients(len(history)), history, strict=True))
            z = z + sum((h * b) * f for b, f in (terms[::-1] if oldest_first else terms))
        if index + 1 == len(grid) or grid[index + 1][0] != j:  # observation time t_{j+1}
            if not np.all(np.isfinite(z)):
                raise IntegrationError(
                    f"the Adams–Bashforth map became non-finite before t="
                    f"{float(np.real(times[j + 1])):.6g}.", t=float(np.real(times[j + 1])),
                    cause="non-finite state")
            sample_loss = sample_loss + compiled.loss(z, observed(data, j + 1))
    return sample_loss


def adams_bashforth_reference(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                              times: NDArray, steps: int, *, data=None
                              ) -> tuple[tuple[float, NDArray, NDArray, NDArray], float]:
    """The map's exact derivative and what rounding makes of it.

    High-order Adams–Bashforth formulas have large coefficients of alternating sign and
    parasitic roots: the map amplifies rounding, and two evaluations that are equal in
    exact arithmetic (its terms summed newest first, as torchdiffeq does, or oldest first)
    differ far above float64's epsilon. Their distance, per block relative to the block's
    largest entry, times ``ROUNDING_SAFETY``, is what a comparison must allow besides the
    usual rounding tier; the gradient returned is the newest-first one.
    """
    first = adams_bashforth_complex_step(compiled, z0, theta, times, steps, data=data)
    other = adams_bashforth_complex_step(compiled, z0, theta, times, steps, data=data,
                                         oldest_first=True)
    spread = max(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.finfo(float).tiny)
                 for a, b in zip(first[1:], other[1:], strict=True) if np.size(a))
    return first, ROUNDING_SAFETY * float(spread)


def adams_bashforth_complex_step(compiled: CompiledForm, z0: NDArray, theta: NDArray,
                                 times: NDArray, steps: int, *, data=None,
                                 oldest_first: bool = False
                                 ) -> tuple[float, NDArray, NDArray, NDArray]:
    r"""``(loss, dL/dz0, dL/dtheta, dL/dtimes)`` of the map, exact to rounding:
    :math:`\operatorname{Im} L(x + i h e_j) / h` per input entry (the batch's samples at
    once for ``z0``), checked against a larger step as the Runge–Kutta complex step is."""
    if compiled.non_analytic:
        raise MethodUnavailable(
            "complex_step", f"the dynamics or loss use {', '.join(compiled.non_analytic)}, "
            "which is not complex-analytic; the Adams–Bashforth map has no other exact "
            "derivative here.")
    B, n = z0.shape
    check_per_entry("complex_step", n + theta.shape[0] + times.shape[0], 2,
                    steps * (len(times) - 1), B)

    loss = float(adams_bashforth_loss(compiled, z0, theta, times, steps, data=data,
                                      oldest_first=oldest_first).sum())

    def derivative(what: str, z=z0, th=theta, ts=times, per_sample=False):
        values = []
        for h in (COMPLEX_STEP, COMPLEX_STEP_CHECK):
            moved = {"z": z, "th": th, "ts": ts}
            for key, value in moved.items():
                if callable(value):
                    moved[key] = value(h)
            losses = adams_bashforth_loss(compiled, moved["z"], moved["th"], moved["ts"],
                                          steps, data=data, oldest_first=oldest_first)
            values.append((losses if per_sample else losses.sum()).imag / h)
        fine, coarse = values
        if np.any(np.abs(fine - coarse) > MULTISTEP_AGREEMENT
                  * np.maximum(np.abs(fine), 1e-300)):
            raise MethodUnavailable(
                "complex_step", f"the complex steps {COMPLEX_STEP:g}i and "
                f"{COMPLEX_STEP_CHECK:g}i in {what} disagree: the map is not complex-analytic "
                f"here, or it amplifies perturbations so much (its loss is {loss:.3g}) that "
                "the step's higher-order terms show; fewer, larger or more steps per "
                "interval change the map.")
        return fine

    def shifted(array, index):
        def make(h):
            out = np.asarray(array, dtype=complex).copy()
            out[index] += 1j * h
            return out

        return make

    grad_z0 = np.zeros_like(z0, dtype=float)
    for j in range(n):
        grad_z0[:, j] = derivative(f"z0[:, {j}]", z=shifted(z0, (slice(None), j)),
                                   per_sample=True)
    grad_theta = np.array([derivative(f"theta[{j}]", th=shifted(theta, j))
                           for j in range(theta.shape[0])], dtype=float)
    grad_times = np.array([derivative(f"times[{j}]", ts=shifted(times, j))
                           for j in range(times.shape[0])], dtype=float)
    return loss, grad_z0, grad_theta, grad_times
