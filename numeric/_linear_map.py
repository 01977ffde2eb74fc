r"""The discrete adjoint of an explicit Runge–Kutta method on linear autonomous dynamics,
through the step's polynomial (one matrix product per step each way, not one per stage).

For :math:`f = A z + c` and an explicit tableau :math:`(a, b)` every stage is a polynomial
in :math:`X = hA` applied to :math:`z` and :math:`c`, and so is the step:

.. math:: z_{k+1} = R(X) z_k + h\,\varphi(X)\,c, \qquad
          R(X) = \sum_{q \ge 0} r_q X^q, \quad \varphi(X) = \sum_{q \ge 0} r_{q+1} X^q,
          \quad r_0 = 1,\ r_q = b^T a^{q-1} \mathbf 1,

(the stability polynomial and its companion; a is nilpotent, so the sums stop at the
number of stages). This is the same discrete map as the stage-by-stage solver, evaluated
in another order (each step as :math:`z_k + (R - I) z_k`, so that it rounds relative to
the increment as the stages do), so its derivative agrees with the stage-wise reverse pass
and with the complex step on the frozen grid to rounding. Its reverse pass is
:math:`\lambda_k = R^T \lambda_{k+1}`, and the parameter and time terms of a whole interval
of equal steps come from two sums, :math:`G = \sum_{k,b} \lambda_{k+1} z_k^T` (one large
product) and :math:`\Lambda = \sum_{k,b} \lambda_{k+1}`:

.. math:: \bar A = \sum_q r_q h^q D_q(G) + h \sum_q r_{q+1} h^q D_q(\Lambda c^T), \quad
          \bar c = h\,\varphi(X)^T \Lambda, \quad
          \bar h = \langle R'(h), G\rangle + \Lambda^T \tfrac{d}{dh}\big(h\varphi(hA)\big) c,

with :math:`D_q(G) = \sum_{r<q} (A^T)^r G (A^T)^{q-1-r}`, the upper-right block of the
q-th power of :math:`\begin{pmatrix} A^T & G \\ 0 & A^T \end{pmatrix}`.

Used by :func:`numeric._discrete.discrete_adjoint_gradient` where the grid has equal steps
in every observation interval (fixed-step solvers) and the dynamics are linear and
autonomous; anything else takes the stage-wise pass.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

from ._checks import observed
from ._errors import IntegrationError
from ._rosenbrock_tableau import is_rosenbrock
from ._tableaus import ButcherTableau

__all__ = ["applies", "linear_map_gradient"]


@functools.cache
def _coefficients(tableau: ButcherTableau) -> tuple[float, ...]:
    """``r_0 .. r_s`` of the stability polynomial (``r_q = b^T a^{q-1} 1``)."""
    s = tableau.stages
    out = [1.0]
    power = np.ones(s)
    for _ in range(s):
        out.append(float(tableau.b @ power))
        power = tableau.a @ power
    while len(out) > 1 and out[-1] == 0.0:
        out.pop()
    return tuple(out)


def _uniform(fractions: NDArray) -> bool:
    return np.array_equal(fractions, np.linspace(0.0, 1.0, len(fractions)))


#: The step polynomial and its derivatives cost a few products of ``2n x 2n`` matrices per
#: interval, the stages one ``B x n`` by ``n x n`` product each: the polynomial route is
#: taken where ``n`` is at most this fraction of the rows the stages would multiply.
ROWS_PER_STATE = 8


def applies(compiled, grid, tableau, batch: int) -> bool:
    """Linear autonomous dynamics, an explicit Runge–Kutta tableau, equal steps in every
    interval, and ``n`` small against the batch times the steps."""
    if is_rosenbrock(tableau) or tableau.adaptive:
        return False
    if getattr(compiled, "linear", None) is None:
        return False
    if not all(_uniform(s) for s in grid.fractions):
        return False
    return ROWS_PER_STATE * compiled.n <= batch * min(len(s) - 1 for s in grid.fractions)


def _polynomial(coefficients, X: NDArray) -> NDArray:
    """``sum_q coefficients[q] X^q`` by Horner's rule."""
    out = coefficients[-1] * np.eye(X.shape[0], dtype=X.dtype)
    for coefficient in reversed(coefficients[:-1]):
        out = out @ X
        out[np.diag_indices_from(out)] += coefficient
    return out


def _derivative(coefficients, AT: NDArray, G: NDArray) -> NDArray:
    """``sum_q coefficients[q] D_q(G)``: the upper-right block of the polynomial of the
    block matrix ``[[A^T, G], [0, A^T]]``."""
    n = AT.shape[0]
    block = np.zeros((2 * n, 2 * n), dtype=np.result_type(AT, G))
    block[:n, :n] = block[n:, n:] = AT
    block[:n, n:] = G
    return _polynomial(coefficients, block)[:n, n:]


def linear_map_gradient(compiled, z0: NDArray, theta: NDArray, times: NDArray, grid,
                        tableau: ButcherTableau, *, data=None):
    """``(loss, dL/dz0, dL/dtheta, dL/dtimes)`` of the discrete map (see the module
    docstring); the same contract as ``discrete_adjoint_gradient``."""
    structure = compiled.linear
    dtype = np.result_type(z0, theta, times)
    theta = np.asarray(theta, dtype=dtype)
    A = np.asarray(structure.matrix(theta), dtype=dtype)
    c = np.asarray(structure.offset(theta), dtype=dtype) if structure.affine else None
    AT = A.T
    r = _coefficients(tableau)
    phi = r[1:]  # h phi(X) = h sum_q r_{q+1} X^q
    N = len(times) - 1
    B, n = z0.shape
    per_interval = []
    z = z0.astype(dtype)
    zs = [z]
    sample_loss = np.zeros(B, dtype=dtype)
    for j in range(N):
        steps = len(grid.fractions[j]) - 1
        h = (times[j + 1] - times[j]) / steps
        # the increment R - I (entries O(hA)): z + z E^T rounds like the stages do,
        # relative to the increment, where (I + E) z would add the same rounding of the
        # ones of R in every step
        E = _polynomial([rq * h**q if q else 0.0 for q, rq in enumerate(r)], A)
        ET = E.T
        shift = None if c is None else h * (_polynomial([pq * h**q for q, pq in
                                                          enumerate(phi)], A) @ c)
        states = np.empty((steps + 1, B, n), dtype=dtype)
        states[0] = z
        for k in range(steps):
            np.matmul(states[k], ET, out=states[k + 1])
            states[k + 1] += states[k]
            if shift is not None:
                states[k + 1] += shift
        z = states[-1]
        if not np.all(np.isfinite(z)):
            end, begin = float(np.real(times[j + 1])), float(np.real(times[j]))
            raise IntegrationError(
                f"integration on the frozen grid stopped at t={end:.6g}: the state became "
                f"non-finite (inf or nan) after t={begin:.6g}.",
                t=end, cause="non-finite state",
            )
        per_interval.append((h, steps, E, states))
        zs.append(z)
        sample_loss = sample_loss + compiled.loss(z, observed(data, j + 1))
    lam = compiled.loss_grad(zs[N], observed(data, N))
    grad_A = np.zeros((n, n), dtype=dtype)
    grad_c = np.zeros(n, dtype=dtype)
    grad_times = np.zeros(N + 1, dtype=dtype)
    for j in range(N - 1, -1, -1):
        h, steps, E, states = per_interval[j]
        lams = np.empty_like(states)  # lams[k] = lambda_k; lams[steps] = lambda at t_{j+1}
        lams[steps] = lam
        for k in range(steps - 1, -1, -1):
            np.matmul(lams[k + 1], E, out=lams[k])
            lams[k] += lams[k + 1]
        after = lams[1:].reshape(-1, n)
        G = after.T @ states[:-1].reshape(-1, n)
        Lam = np.ones(after.shape[0], dtype=dtype) @ after
        grad_A += _derivative([rq * h**q for q, rq in enumerate(r)], AT, G)
        R_dot = _polynomial([q * rq * h ** (q - 1) if q else 0.0 for q, rq in enumerate(r)],
                            A)
        h_bar = np.sum(R_dot * G)
        if c is not None:
            grad_A += _derivative([h * pq * h**q for q, pq in enumerate(phi)], AT,
                                  np.outer(Lam, c))
            grad_c += h * (_polynomial([pq * h**q for q, pq in enumerate(phi)], A).T @ Lam)
            h_bar += Lam @ (_polynomial([(q + 1) * pq * h**q for q, pq in enumerate(phi)],
                                        A) @ c)
        # t_k = t_j + (k/steps) Delta_j and h = Delta_j / steps: f is autonomous, so only h
        # carries the interval's length
        grad_times[j] -= h_bar / steps
        grad_times[j + 1] += h_bar / steps
        lam = lams[0]
        if j >= 1:
            lam = lam + compiled.loss_grad(zs[j], observed(data, j))
    grad_theta = structure.theta_gradient(theta, grad_A, grad_c) if compiled.p else np.zeros(0)
    return float(np.sum(sample_loss)), lam, np.asarray(grad_theta), grad_times
