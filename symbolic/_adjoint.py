"""Exact adjoint equations of a Neural ODE, derived with SymPy (shared/MATH.md)."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ._calculus import real_jacobian
from ._dynamics import Dynamics, check_loss, check_targets

__all__ = ["AdjointSystem", "derive_adjoint"]


@dataclass(frozen=True)
class AdjointSystem:
    r"""The continuous adjoint system of MATH.md, as exact SymPy expressions.

    .. math::
        \frac{da}{dt} = -\Big(\frac{\partial f}{\partial z}\Big)^{\!T} a, \qquad
        \frac{dL}{d\theta} = \int_{t_0}^{t_N} \Big(\frac{\partial f}{\partial \theta}\Big)^{\!T}
        a \, dt, \qquad a(t_i^-) = a(t_i^+) + \nabla \ell(z(t_i))

    Attributes
    ----------
    dynamics : Dynamics
    loss : sympy.Expr
        The per-observation loss :math:`\ell(z)`.
    adjoint : tuple of n Symbols
        The adjoint variables :math:`a`, named ``a_<state>``.
    adjoint_rhs : Matrix, n x 1
        :math:`-(\partial f/\partial z)^T a`.
    param_integrand : Matrix, p x 1
        :math:`(\partial f/\partial \theta)^T a`.
    time_partial : sympy.Expr
        :math:`a^T \partial f/\partial t` (zero for autonomous dynamics).
    loss_gradient : Matrix, n x 1
        :math:`\nabla \ell(z)`.
    jacobian_state, jacobian_params : Matrix
        :math:`\partial f/\partial z` (n x n) and :math:`\partial f/\partial \theta` (n x p).
    time_derivative : Matrix, n x 1
        :math:`\partial f/\partial t`.

    Derivatives treat every symbol as real (``d|x|/dx = sign(x)``).
    """

    dynamics: Dynamics
    loss: sp.Expr
    adjoint: tuple[sp.Symbol, ...]
    adjoint_rhs: sp.ImmutableMatrix
    param_integrand: sp.ImmutableMatrix
    time_partial: sp.Expr
    loss_gradient: sp.ImmutableMatrix
    jacobian_state: sp.ImmutableMatrix
    jacobian_params: sp.ImmutableMatrix
    time_derivative: sp.ImmutableMatrix
    targets: tuple[sp.Symbol, ...] = ()

    def equations(self) -> list[tuple[str, sp.Expr]]:
        """(left-hand side, right-hand side) pairs, in the order a person reads them."""
        dyn = self.dynamics
        eqs: list[tuple[str, sp.Expr]] = []
        for z_i, f_i in zip(dyn.state, dyn.rhs, strict=False):
            eqs.append((f"d{z_i}/dt", f_i))
        for a_i, rhs_i in zip(self.adjoint, self.adjoint_rhs, strict=False):
            eqs.append((f"d{a_i}/dt", rhs_i))
        for theta_j, integrand_j in zip(dyn.params, self.param_integrand, strict=False):
            eqs.append((f"dL/d{theta_j} integrand", integrand_j))
        for z_i, g_i in zip(dyn.state, self.loss_gradient, strict=False):
            eqs.append((f"jump in {_adjoint_name(z_i)} at t_i", g_i))
        return eqs

    def __str__(self) -> str:
        dyn = self.dynamics
        eqs = self.equations()
        width = max(len(lhs) for lhs, _ in eqs)
        n, p = dyn.n, dyn.p

        def block(start: int, stop: int) -> list[str]:
            return [f"    {lhs.ljust(width)} = {rhs}" for lhs, rhs in eqs[start:stop]]

        lines = [
            f"Adjoint system for n = {n} state{'s' if n != 1 else ''}, "
            f"p = {p} parameter{'s' if p != 1 else ''}",
            f"  loss at each observation: l(z) = {self.loss}",
            "  state (forward):",
            *block(0, n),
            "  adjoint (backward, a(t_N) = grad l(z(t_N)), a_theta(t_N) = 0):",
            *block(n, 2 * n),
        ]
        if p:
            lines += ["  parameter gradient dL/dtheta = integral over [t_0, t_N] of:",
                      *block(2 * n, 2 * n + p)]
        else:
            lines.append("  parameter gradient: none (no parameters)")
        lines += ["  jumps a(t_i-) = a(t_i+) + grad l(z(t_i)):", *block(2 * n + p, len(eqs))]
        t = "t" if dyn.time is None else str(dyn.time)
        lines.append("  time gradients: dL/dt_i = grad l(z(t_i))^T f(z(t_i), t_i),  "
                     "dL/dt_0 = -a(t_0)^T f(z_0, t_0)")
        if self.time_partial != 0:
            lines.append(f"  explicit time dependence: a^T df/d{t} = {self.time_partial} "
                         "(its integral over [t_0, t_N] is the sum of the time gradients)")
        lines.extend(self._matrix_form())
        return "\n".join(lines)

    def _matrix_form(self) -> list[str]:
        """Matrix-form lines for dynamics linear in z (the seed's ``f = W z``)."""
        dyn = self.dynamics
        jac = self.jacobian_state
        if jac.free_symbols & set(dyn.state):
            return []
        rows = [f"  matrix form: da/dt = -J^T a with J = df/dz = {jac.tolist()}"]
        z_outer = sp.Matrix(self.adjoint) * sp.Matrix(dyn.state).T
        if dyn.p == dyn.n**2 and list(self.param_integrand) == list(z_outer):
            rows.append("               dL/dtheta = integral of a z^T dt "
                        "(theta read row-major as an n x n matrix)")
        return rows

    def latex(self) -> str:
        """The system as a LaTeX ``aligned`` block."""
        dyn = self.dynamics
        rows = []
        for z_i, f_i in zip(dyn.state, dyn.rhs, strict=False):
            rows.append(rf"\frac{{d{sp.latex(z_i)}}}{{dt}} &= {sp.latex(f_i)}")
        for a_i, rhs_i in zip(self.adjoint, self.adjoint_rhs, strict=False):
            rows.append(rf"\frac{{d{sp.latex(a_i)}}}{{dt}} &= {sp.latex(rhs_i)}")
        for theta_j, integrand_j in zip(dyn.params, self.param_integrand, strict=False):
            rows.append(
                rf"\frac{{\partial L}}{{\partial {sp.latex(theta_j)}}} &= "
                rf"\int_{{t_0}}^{{t_N}} {sp.latex(integrand_j)}\, dt"
            )
        for a_i, g_i in zip(self.adjoint, self.loss_gradient, strict=False):
            rows.append(rf"{sp.latex(a_i)}(t_i^-) &= {sp.latex(a_i)}(t_i^+) + {sp.latex(g_i)}")
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def _adjoint_name(state_symbol: sp.Symbol) -> str:
    return f"a_{state_symbol}"


def adjoint_symbols(dynamics: Dynamics) -> tuple[sp.Symbol, ...]:
    """One adjoint Symbol per state variable, named ``a_<state>``, clear of every name used."""
    taken = {str(s) for s in dynamics.state + dynamics.params}
    if dynamics.time is not None:
        taken.add(str(dynamics.time))
    names = []
    for z_i in dynamics.state:
        name = _adjoint_name(z_i)
        while name in taken:
            name = "_" + name
        names.append(name)
    return tuple(sp.Symbol(name, real=True) for name in names)


def derive_adjoint(dynamics: Dynamics, loss: sp.Expr, targets=()) -> AdjointSystem:
    r"""Derive the adjoint system of MATH.md for ``dynamics`` and a per-observation ``loss``.

    Parameters
    ----------
    dynamics : Dynamics
    loss : sympy.Expr
        :math:`\ell(z)`, applied at every observation time; may use only the state symbols
        and ``targets``.
    targets : sequence of Symbols, optional
        Data symbols of the loss (e.g. ``y`` in :math:`\tfrac12 |z - y|^2`), given values
        per observation time and sample when the gradient is computed.

    Returns
    -------
    AdjointSystem
        Exact expressions; for the seed's ``f = W z`` the adjoint right-hand side is
        :math:`-W^T a` and the parameter integrand holds the entries of :math:`a z^T`.
        For matrix-form dynamics a :class:`~symbolic._matrix_adjoint.MatrixAdjointSystem`
        of matrix formulas, derived by reverse accumulation (never entry by entry).

    References
    ----------
    R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018, Section 2 and Appendix B.
    """
    if getattr(dynamics, "form", None) == "matrix":
        from ._matrix_adjoint import derive_matrix_adjoint

        return derive_matrix_adjoint(dynamics, loss, targets)
    loss_expr = check_loss(dynamics, loss, targets)
    target_symbols = check_targets(dynamics, targets)
    a = sp.Matrix(adjoint_symbols(dynamics))
    f = sp.Matrix(dynamics.rhs)
    jac_z = real_jacobian(f, dynamics.state)
    jac_theta = real_jacobian(f, dynamics.params)
    adjoint_rhs = -(jac_z.T * a)
    param_integrand = jac_theta.T * a if dynamics.p else sp.zeros(0, 1)
    if dynamics.time is not None:
        time_derivative = real_jacobian(f, [dynamics.time])
    else:
        time_derivative = sp.zeros(dynamics.n, 1)
    time_partial = (a.T * time_derivative)[0, 0]
    loss_gradient = real_jacobian([loss_expr], dynamics.state).T
    return AdjointSystem(
        dynamics=dynamics,
        loss=loss_expr,
        targets=target_symbols,
        adjoint=tuple(a),
        adjoint_rhs=sp.ImmutableMatrix(adjoint_rhs),
        param_integrand=sp.ImmutableMatrix(param_integrand),
        time_partial=time_partial,
        loss_gradient=sp.ImmutableMatrix(loss_gradient),
        jacobian_state=sp.ImmutableMatrix(jac_z),
        jacobian_params=sp.ImmutableMatrix(jac_theta),
        time_derivative=sp.ImmutableMatrix(time_derivative),
    )
