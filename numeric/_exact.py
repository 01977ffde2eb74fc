"""Exact gradients for linear autonomous dynamics from the matrix exponential."""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import observed
from ._errors import IntegrationError, MethodUnavailable
from ._high_precision import MAX_AUGMENTED_SIZE, tight_reference

__all__ = ["exact_gradient"]


def _check_finite(values: NDArray, t: float, what: str, cause: str) -> None:
    """Raise ``IntegrationError`` when ``values`` overflowed (or became nan) at ``t``."""
    if not np.all(np.isfinite(values)):
        raise IntegrationError(
            f"the exact solution cannot be evaluated at t={t:.6g}: {what} is not finite "
            "(beyond float64's range, 1.8e308); the solution or its gradient overflows for "
            "these inputs, so rescale them or shorten the time span.",
            t=float(t),
            cause=cause,
        )


def exact_gradient(
    compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray, *, data=None
) -> tuple[float, NDArray, NDArray, NDArray]:
    r"""Gradients of ``L`` for ``f = A(theta) z + c(theta)`` (shared/MATH.md, "Exact
    references").

    The affine case is made linear on :math:`\tilde z = [z; 1]` with
    :math:`\tilde A = [[A, c], [0, 0]]`. With :math:`\Delta_i = t_i - t_0`,
    :math:`g_i = \nabla\ell(z(t_i))`:

    .. math:: z(t_i) = e^{\tilde A \Delta_i} \tilde z_0, \qquad
              \frac{dL}{dz_0} = \sum_i e^{\tilde A^T \Delta_i} g_i, \qquad
              \frac{dL}{d\tilde A} = \sum_i \Delta_i\, L_{\exp}(\tilde A^T \Delta_i,\
              \textstyle\sum_b g_{i,b} \tilde z_{0,b}^T)

    chained to ``theta`` through :math:`\partial A/\partial\theta` and
    :math:`\partial c/\partial\theta` from SymPy; :math:`dL/dt_i = \sum_b g_i^T f(z(t_i))`
    and :math:`dL/dt_0 = -\sum_b (dL/dz_0)^T f(z_0)`.

    References
    ----------
    A. H. Al-Mohy, N. J. Higham, "Computing the Fréchet derivative of the matrix
    exponential", SIAM J. Matrix Anal. Appl. 30(4), 2009 (``scipy.linalg.expm_frechet``).
    """
    structure = compiled.linear
    if structure is None:
        reason = (
            "the dynamics depend on time"
            if not compiled.autonomous
            else "f is not of the form A(theta) z + c(theta) (it is nonlinear in z)"
        )
        size = z0.shape[0] * compiled.n * (1 + compiled.n + compiled.p)
        instead = ("Use 'high_precision' for a reference on this problem."
                   if size <= MAX_AUGMENTED_SIZE else
                   f"Use {tight_reference(size)} for a reference on this problem.")
        raise MethodUnavailable(
            "exact", f"{reason}; the matrix-exponential reference needs linear autonomous "
            f"dynamics. {instead}"
        )
    n, p = compiled.n, compiled.p
    B = z0.shape[0]
    m = n + 1
    a_tilde = np.zeros((m, m))
    a_tilde[:n, :n] = structure.matrix(theta)
    a_tilde[:n, n] = structure.offset(theta)
    z0_tilde = np.concatenate([z0, np.ones((B, 1))], axis=1)
    loss = 0.0
    grad_z0 = np.zeros((B, n))
    grad_a = np.zeros((m, m))
    grad_times = np.zeros(len(times))
    _check_finite(a_tilde, times[0], "the matrix A(theta) of f = A z + c", "overflow of A")
    for i in range(1, len(times)):
        delta = times[i] - times[0]
        propagator = scipy.linalg.expm(a_tilde * delta)
        _check_finite(propagator, times[i], f"e^(A (t_{i} - t_0))", "overflow of e^(A t)")
        z_i = (z0_tilde @ propagator.T)[:, :n]
        _check_finite(z_i, times[i], f"the state z(t_{i}) = e^(A (t_{i} - t_0)) z_0",
                      "non-finite state")
        loss += float(compiled.loss(z_i, observed(data, i)).sum())
        g = np.concatenate([compiled.loss_grad(z_i, observed(data, i)), np.zeros((B, 1))],
                           axis=1)
        grad_z0 += (g @ propagator)[:, :n]
        direction = g.T @ z0_tilde
        _check_finite(direction, times[i], f"the loss gradient times z_0 at t_{i}",
                      "non-finite loss gradient")
        try:
            _, frechet = scipy.linalg.expm_frechet(a_tilde.T * delta, direction)
        except ValueError:  # scipy refuses the inf its own scaling and squaring produced
            frechet = np.full_like(direction, np.inf)
        _check_finite(frechet, times[i], f"the Frechet derivative of e^(A (t_{i} - t_0))",
                      "overflow of the Frechet derivative")
        grad_a += delta * frechet
        grad_times[i] = float(np.sum(g[:, :n] * compiled.rhs(z_i, theta, times[i])))
    grad_theta = structure.theta_gradient(theta, grad_a[:n, :n], grad_a[:n, n]) if p else \
        np.zeros(0)
    grad_times[0] = -float(np.sum(grad_z0 * compiled.rhs(z0, theta, times[0])))
    return loss, grad_z0, grad_theta, grad_times
