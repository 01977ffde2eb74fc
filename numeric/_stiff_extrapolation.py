"""Linearly implicit Euler extrapolation in mpmath: the high-precision reference for stiff
dynamics (Hairer & Wanner, "Solving ODEs II", IV.9; Deuflhard 1985).

The explicit Gragg–Bulirsch–Stoer reference (numeric/_extrapolation.py) needs steps of
order ``1/|lambda|`` for an eigenvalue ``lambda`` of the Jacobian, so on stiff dynamics it
takes unbounded steps. The linearly implicit Euler method solves with ``I - h A``, ``A``
the exact Jacobian of the forward-sensitivity system at the start of the macro step, and
is stable there; its error has an asymptotic expansion in powers of ``h`` (for any fixed
``A``), so extrapolation raises the order by one per column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import mpmath

from ._errors import IntegrationError
from ._extrapolation import SolveStats, StepFailure, flat_values

__all__ = ["LinearlyImplicitExtrapolation", "SensitivityJacobianSystem", "stiff_max_columns"]

#: Step-size control (after SEULEX, Hairer & Wanner II, IV.9): column ``j`` proposes
#: ``H_opt = H * _SAFE2 * (_SAFE1 / err)**(1/j)``, clipped to ``[_FAC1, _FAC2] * H``.
_SAFE1, _SAFE2, _FAC1, _FAC2 = 0.5, 0.9, 0.02, 4.0
#: The stability check rejects a macro step whose second substep's increment exceeds the
#: first's by this factor: on a smooth solution both are about ``h F``, while beyond the
#: method's stability they grow geometrically.
_GROWTH = 4.0
#: Error floor of a block: ``2**-10`` of its largest entry (sensitivities start at zero).
_FLOOR = 2.0**-10


def _lu(matrix: list[list]) -> tuple[list[list], list[int]]:
    """Partial-pivoting LU of a small mpf matrix (row lists); raises StepFailure when
    singular."""
    n = len(matrix)
    lu = [row[:] for row in matrix]
    perm = list(range(n))
    for k in range(n):
        pivot = max(range(k, n), key=lambda i: abs(lu[i][k]))
        if not lu[pivot][k]:
            raise StepFailure("I - h J is singular")
        if pivot != k:
            lu[k], lu[pivot] = lu[pivot], lu[k]
            perm[k], perm[pivot] = perm[pivot], perm[k]
        inverse = 1 / lu[k][k]
        for i in range(k + 1, n):
            factor = lu[i][k] * inverse
            lu[i][k] = factor
            if factor:
                row_i, row_k = lu[i], lu[k]
                for j in range(k + 1, n):
                    row_i[j] -= factor * row_k[j]
    return lu, perm


def _lu_solve(lu: list[list], perm: list[int], r: list) -> list:
    n = len(lu)
    x = [r[p] for p in perm]
    for i in range(n):
        x[i] -= mpmath.fdot(lu[i][:i], x[:i]) if i else 0
    for i in range(n - 1, -1, -1):
        x[i] = (x[i] - (mpmath.fdot(lu[i][i + 1 :], x[i + 1 :]) if i + 1 < n else 0)) / lu[i][i]
    return x


class SensitivityJacobianSystem:
    r"""The forward-sensitivity system of one sample with its exact Jacobian, in mpmath.

    :math:`y = [z;\ S_1; \dots; S_{n+p}]` (the columns of :math:`[S_z\ S_\theta]`),

    .. math:: \dot z = f, \qquad \dot S_c = J S_c + [c > n]\,
              \partial f/\partial\theta_{c-n}

    whose Jacobian is block lower triangular, :math:`J` on the diagonal and
    :math:`K_c x = J'(x, 0) S_c + [c > n] J_\theta'(x, 0)_{c-n}` below it. So
    :math:`(I - hA)^{-1}` needs one ``n x n`` LU: :math:`x_z = (I - hJ)^{-1} r_z`, then
    :math:`x_c = (I - hJ)^{-1}(r_c + h K_c x_z)`.
    """

    def __init__(self, funcs, second, theta: list, n: int, p: int, stats: SolveStats,
                 autonomous: bool):
        self.funcs, self.second, self.theta = funcs, second, theta
        self.n, self.p, self.stats, self.autonomous = n, p, stats, autonomous

    def _columns(self, y: list) -> list[list]:
        n = self.n
        return [y[n + c * n : n + (c + 1) * n] for c in range(self.n + self.p)]

    def _extend_columns(self, out: list, rows: list[list], jac_theta: list, y: list) -> None:
        """Append ``rows @ S_c`` for every sensitivity column ``c`` of ``y``, plus the
        parameter column of ``jac_theta`` (row-major ``n x p``) for ``c >= n``."""
        n, p = self.n, self.p
        for c, column in enumerate(self._columns(y)):
            products = [mpmath.fdot(row, column) for row in rows]
            if c >= n:
                products = [v + jac_theta[r * p + c - n] for r, v in enumerate(products)]
            out.extend(products)

    def __call__(self, t, y: list) -> list:
        n, p = self.n, self.p
        self.stats.nfev += 1
        z = y[:n]
        try:
            out = flat_values(self.funcs.rhs(z, self.theta, t))
            jac = flat_values(self.funcs.jac_state(z, self.theta, t))
            rows = [jac[r * n : (r + 1) * n] for r in range(n)]
            jac_theta = flat_values(self.funcs.jac_params(z, self.theta, t)) if p else []
            self._extend_columns(out, rows, jac_theta, y)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise StepFailure(f"{type(exc).__name__} evaluating f: {exc}") from exc
        _check_real(out)
        return out

    def _directional(self, z, dz, t, dt) -> tuple[list[list], list]:
        """:math:`J'(dz, dt)` as rows and :math:`J_\\theta'(dz, dt)` flat (row-major)."""
        n, p = self.n, self.p
        jac = flat_values(self.second.jac_state_jvp(z, dz, self.theta, [t, dt]))
        jac_theta = flat_values(self.second.jac_params_jvp(z, dz, self.theta, [t, dt])) if p else []
        return [jac[r * n : (r + 1) * n] for r in range(n)], jac_theta

    def time_partial(self, t, y: list) -> list | None:
        """:math:`\\partial F/\\partial t = [f_t;\\ J'(0, 1) S_c + J_\\theta'(0, 1)_{c-n}]`."""
        if self.autonomous:
            return None
        n = self.n
        z = y[:n]
        zero = [mpmath.mpf(0)] * n
        try:
            out = flat_values(self.second.time_partial(z, self.theta, t))
            rows, jac_theta = self._directional(z, zero, t, 1)
            self._extend_columns(out, rows, jac_theta, y)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise StepFailure(f"{type(exc).__name__} evaluating df/dt: {exc}") from exc
        _check_real(out)
        return out

    def linearize(self, t, y: list) -> _Linearization:
        n = self.n
        z = y[:n]
        try:
            jac = flat_values(self.funcs.jac_state(z, self.theta, t))
            units = [[mpmath.mpf(1 if i == m else 0) for i in range(n)] for m in range(n)]
            derivatives = [self._directional(z, unit, t, 0) for unit in units]
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise StepFailure(f"{type(exc).__name__} evaluating the Jacobian: {exc}") from exc
        _check_real(jac)
        return _Linearization(self, [jac[r * n : (r + 1) * n] for r in range(n)],
                              derivatives, self._columns(y))


def _check_real(values: list) -> None:
    for v in values:
        if not isinstance(v, mpmath.mpf) and not isinstance(v, int):
            raise StepFailure(f"f took a complex or non-numeric value ({v})")
        if not mpmath.isfinite(v):
            raise StepFailure("f took a non-finite value")


class _Linearization:
    """The Jacobian blocks at a macro step's start: factors ``I - h A`` for any ``h``."""

    def __init__(self, system: SensitivityJacobianSystem, jac_rows, derivatives, columns):
        self.system, self.jac_rows = system, jac_rows
        self.derivatives, self.columns = derivatives, columns

    def solver(self, h):
        n, p = self.system.n, self.system.p
        matrix = [[(1 if i == j else 0) - h * self.jac_rows[i][j] for j in range(n)]
                  for i in range(n)]
        lu, perm = _lu(matrix)

        def solve(r: list) -> list:
            x_z = _lu_solve(lu, perm, r[:n])
            # K_c x_z = J'(x_z, 0) S_c + J_theta'(x_z, 0)_{c-n}: J' is linear in x_z
            rows = [[mpmath.fsum(x_z[m] * self.derivatives[m][0][i][j] for m in range(n))
                     for j in range(n)] for i in range(n)]
            out = list(x_z)
            for c, column in enumerate(self.columns):
                coupling = [mpmath.fdot(row, column) for row in rows]
                if c >= n:
                    coupling = [v + mpmath.fsum(x_z[m] * self.derivatives[m][1][i * p + c - n]
                                                for m in range(n))
                                for i, v in enumerate(coupling)]
                rhs = [a + h * b for a, b in zip(r[n + c * n : n + (c + 1) * n], coupling,
                                                 strict=True)]
                out.extend(_lu_solve(lu, perm, rhs))
            return out

        return solve


def _error_norm(delta: list, y: list, y_new: list, blocks: Sequence[slice],
                largest: Sequence) -> float:
    r""":math:`\max_i |\Delta_i| / \max(|y_i|, |\hat y_i|, 2^{-10} m_{block})`, with
    :math:`m_{block}` the largest entry the block has had so far (``largest``): an absolute
    floor on the scale of the solution, since sensitivities start at zero and may cross
    it again (a block of one entry would otherwise ask for a relative error at zero)."""
    worst = 0.0
    for block, big in zip(blocks, largest, strict=True):
        magnitude = [max(abs(a), abs(b)) for a, b in zip(y[block], y_new[block], strict=True)]
        if not magnitude:
            continue
        floor = max(max(magnitude), big) * _FLOOR
        for d, m in zip(delta[block], magnitude, strict=True):
            if d:
                scale = max(m, floor)
                if not scale:
                    return math.inf
                worst = max(worst, float(abs(d) / scale))
    return worst


class LinearlyImplicitExtrapolation:
    r"""Macro steps of the extrapolated linearly implicit Euler method, SEULEX-style order
    and step-size control.

    Column ``j`` (1-based) takes :math:`n_j = j` substeps of size :math:`h = H/n_j` with the
    Jacobian :math:`A` and :math:`F_t = \partial F/\partial t` of the macro step's start:

    .. math:: (I - hA)\,\Delta_i = h F(t + i h, y_i) + h^2 F_t, \qquad
              y_{i+1} = y_i + \Delta_i, \qquad T_{j,1} = y_{n_j},

    and Aitken–Neville extrapolation in powers of :math:`h`,
    :math:`T_{j,l+1} = T_{j,l} + (T_{j,l} - T_{j-1,l}) / (n_j/n_{j-l} - 1)`, gives
    :math:`T_{j,j}` of order ``j``; :math:`\|T_{j,j} - T_{j,j-1}\|` decides acceptance, the
    next step size and the number of columns. A substep whose increment grows
    (:math:`\|\Delta_1\| > 4 \|\Delta_0\|`) signals a step too large for the method's
    stability and is rejected (Hairer & Wanner II, IV.9, "stability check").
    """

    def __init__(self, system: SensitivityJacobianSystem, blocks: Sequence[slice], tol: float,
                 max_columns: int, stats: SolveStats, *, max_steps: int):
        self.system, self.blocks, self.tol, self.stats = system, blocks, tol, stats
        self.max_steps, self.kmax = max_steps, max_columns
        self.seq = list(range(1, max_columns + 1))
        self.work = [sum(self.seq[: j + 1]) + j + 1 for j in range(max_columns)]
        # orders below about 0.4 per digit asked for are never efficient at these tolerances
        # (the work estimates of the first, tiny steps would otherwise pull the order down)
        self.kmin = max(3, min(self.kmax - 2, int(0.4 * -math.log10(tol))))
        self.k = max(self.kmin, min(self.kmax - 2, int(0.6 * -math.log10(tol))))
        self.H: float | None = None
        self.attempts = 0
        self._capped: dict[int, bool] = {}
        self.largest = [0] * len(blocks)  # per block, the largest |entry| met so far

    def integrate(self, y: list, t_start, t_end) -> list:
        """Integrate the mpf list ``y`` from ``t_start`` to exactly ``t_end``."""
        t = t_start
        span = float(t_end - t_start)
        if self.H is None:
            self.H = 1e-3 * span
        failure = ""
        start = self._restart(t, y)
        while t < t_end:
            remaining = t_end - t
            H_float = min(self.H, 4 * span)
            landing = H_float >= 0.999 * float(remaining)
            if landing:
                H = remaining
            else:
                if 2 * H_float > float(remaining):
                    H_float = float(remaining) / 2
                H = mpmath.mpf(H_float)
            self._check_progress(t, t_end, H, span, y, failure)
            try:
                y_new = self._macro_step(t, y, start, H)
            except StepFailure as exc:
                failure, y_new = str(exc), None
                self.H = 0.25 * float(H)
            if y_new is None:
                self.stats.rejected += 1
                continue
            y, t = y_new, (t_end if landing else t + H)
            self.largest = [max([big, *(abs(v) for v in y[block])])
                            for big, block in zip(self.largest, self.blocks, strict=True)]
            self.stats.accepted += 1
            failure = ""
            start = self._restart(t, y)
        return y

    def _check_progress(self, t, t_end, H, span, y, failure: str) -> None:
        self.attempts += 1
        if self.attempts > self.max_steps:
            raise IntegrationError(
                f"high-precision integration stopped at t = {float(t):.17g}: the budget of "
                f"{self.max_steps} macro steps ran out before t = {float(t_end):.17g}",
                t=float(t), cause="step budget exhausted")
        if float(H) <= max(self.tol * span, abs(float(t)) * 2.0 ** (8 - mpmath.mp.prec)):
            why = failure or "the local error test cannot be met"
            size = mpmath.nstr(max(abs(v) for v in y[self.blocks[0]]), 3)
            raise IntegrationError(
                f"high-precision integration failed at t = {float(t):.17g}: the step size "
                f"underflowed to {float(H):.3g} ({why}; |z| = {size}); does the solution "
                "blow up or leave the domain of f?",
                t=float(t), cause=f"step size underflow: {why}")

    def _restart(self, t, y: list) -> tuple:
        """``F``, ``F_t`` and the linearization at an accepted point."""
        try:
            return (self.system(t, y), self.system.time_partial(t, y),
                    self.system.linearize(t, y))
        except StepFailure as exc:
            raise IntegrationError(f"high-precision integration failed at t = "
                                   f"{float(t):.17g}: {exc}", t=float(t), cause=str(exc)) from exc

    def _column(self, t, y: list, start: tuple, H, n_sub: int) -> list:
        f0, f_t, linear = start
        h = H / n_sub
        solve = linear.solver(h)
        h2 = h * h
        u = y
        first = None
        for i in range(n_sub):
            f = f0 if i == 0 else self.system(t + i * h, u)
            rhs = [h * v for v in f] if f_t is None else [
                h * v + h2 * w for v, w in zip(f, f_t, strict=True)]
            delta = solve(rhs)
            size = max(abs(v) for v in delta[self.blocks[0]])
            if i == 0:
                first = size
            elif i == 1 and size > _GROWTH * first:
                raise StepFailure("the linearly implicit substeps grow: the step is too "
                                  "large for stability")
            u = [a + b for a, b in zip(u, delta, strict=True)]
        return u

    def _step_factor(self, err: float, j: int) -> float:
        """``H_opt / H`` for column ``j``, between ``_FAC1`` and ``_FAC2``; records whether
        it hit the growth limit."""
        fac = (_SAFE1 / err) ** (1.0 / j) * _SAFE2 if err > 0 else math.inf
        self._capped[j] = fac >= _FAC2
        return min(_FAC2, max(_FAC1, fac))

    def _macro_step(self, t, y: list, start: tuple, H) -> list | None:
        """One macro step; the new state, or None when rejected (``self.H`` and
        ``self.k`` updated either way)."""
        k, seq, work = self.k, self.seq, self.work
        H_float = float(H)
        row: list[list] = []
        H_opt: dict[int, float] = {}
        W: dict[int, float] = {}
        for j in range(1, min(k + 1, self.kmax) + 1):
            T = [self._column(t, y, start, H, seq[j - 1])]
            for l in range(1, j):
                ratio = mpmath.mpf(seq[j - 1]) / seq[j - 1 - l] - 1
                T.append([a + (a - b) / ratio for a, b in zip(T[l - 1], row[l - 1],
                                                               strict=True)])
            row = T
            if j == 1:
                continue
            delta = [a - b for a, b in zip(T[j - 1], T[j - 2], strict=True)]
            err = _error_norm(delta, y, T[j - 1], self.blocks, self.largest) / self.tol
            H_opt[j] = H_float * self._step_factor(err, j)
            W[j] = work[j - 1] / H_opt[j]
            if j < k - 1:
                continue
            # converged one column early: accept unless one more column promises less work
            # per unit step (else the order could never rise)
            early = j == k - 1 and (W[j] <= W.get(j - 1, math.inf) or self._capped.get(j))
            if err <= 1.0 and not early:
                self._choose_next(j, H_opt, W)
                self.stats.max_order = max(self.stats.max_order, j)
                return T[j - 1]
            converging = (j == k - 1 and err <= (seq[k] * seq[k - 1]) ** 2) or (
                j == k and err <= seq[k] ** 2)
            if not converging or j == self.kmax:
                break
        self.H = min(H_opt[max(H_opt)], 0.5 * H_float)
        return None

    def _choose_next(self, j: int, H_opt: dict, W: dict) -> None:
        """Next order and step after convergence in column ``j``: the column of least work
        per unit step among those computed, one more when that is the last one (Hairer &
        Wanner II, IV.9, order and step size control)."""
        # compare neighbouring orders only: far below j the clipped step factors make the
        # work estimates meaningless (ODEX compares k-1, k, k+1 likewise)
        best = min((c for c in W if c >= j - 1), key=W.get)
        if self._capped.get(j):  # every column could grow the step by the maximum factor:
            best = j  # the work estimates mean nothing, raise the order
        k_new, H_new = best, H_opt[best]
        if best == j and j + 1 < self.kmax:
            k_new, H_new = j + 1, H_opt[j] * self.work[j] / self.work[j - 1]
        self.k = min(max(k_new, self.kmin), self.kmax - 1)
        self.H = H_new


def lebesgue_constant(k: int) -> float:
    """:math:`\\sum_i |c_i|` of the weights of :math:`T_{k,k} = \\sum_i c_i T_{i,1}` for the
    harmonic sequence: how much extrapolation amplifies the rounding errors of the
    columns (about :math:`10^{0.52 k}`)."""
    weights = [math.prod(Fraction(i, i - l) for l in range(1, k + 1) if l != i)
               for i in range(1, k + 1)]
    return float(sum(abs(w) for w in weights))


def stiff_max_columns(guard_digits: int) -> int:
    """Columns allowed (order = columns) when the working precision carries
    ``guard_digits`` beyond the tolerance: the rounding amplified by extrapolation
    (:func:`lebesgue_constant`) must stay 1000 times below the tolerance."""
    k = 3
    while k < 40 and math.log10(lebesgue_constant(k + 1)) <= guard_digits - 3:
        k += 1
    return k
