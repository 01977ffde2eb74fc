"""The gradient of the per-observation loss in plain scalar symbols, for evaluators that
read expression trees (the double-double reference of ``numeric``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy as sp
from sympy.matrices.expressions.matexpr import MatrixElement

from ._calculus import real_jacobian
from ._dynamics import Dynamics, DynamicsError, check_loss, check_targets

__all__ = ["ScalarLossGradient", "scalar_loss_gradient", "targets_by_name"]


class ScalarLossGradient:
    r""":math:`\nabla_z \ell(z, y)` as ``n`` expressions in the Symbols ``state`` (one per
    state entry, in order) and ``targets`` (one per target, in the order of ``targets=``).

    Attributes
    ----------
    exprs : list of sympy.Expr
    state : tuple of Symbol
    targets : tuple of Symbol
    """

    def __init__(self, exprs: list, state: tuple, targets: tuple):
        self.exprs, self.state, self.targets = exprs, state, targets


def scalar_loss_gradient(dynamics: Dynamics, loss: Any, targets: Any = ()) -> ScalarLossGradient:
    """The loss gradient with every state entry and target (Symbols, or the entries
    ``d[i, 0]`` of a target MatrixSymbol) replaced by a plain real Symbol first, so that it
    differentiates and evaluates in matrix form as in elementwise form."""
    loss = check_loss(dynamics, loss, targets)
    target_leaves = check_targets(dynamics, targets)
    state = tuple(sp.Symbol(f"_z{i}", real=True) for i in range(dynamics.n))
    data = tuple(sp.Symbol(f"_y{j}", real=True) for j in range(len(target_leaves)))
    mapping = dict(zip(dynamics.state, state, strict=True))
    mapping.update(zip(target_leaves, data, strict=True))
    gradient = real_jacobian([loss.xreplace(mapping)], state)
    return ScalarLossGradient(list(gradient), state, data)


def targets_by_name(loss: sp.Expr, names: Sequence[str]) -> Any:
    """The target symbols of ``loss`` in the order of ``names`` (how a compiled form keeps
    them): Symbols, or the entries ``d[i, 0]`` of a target MatrixSymbol; a name the loss
    does not use stands for a fresh real Symbol of that name.

    Raises
    ------
    DynamicsError
        When the names mix Symbols and entries of a MatrixSymbol.
    """
    if not names:
        return ()
    found = {str(s): s for s in (*loss.free_symbols, *loss.atoms(MatrixElement))
             if str(s) in set(names)}
    leaves = tuple(found.get(name, sp.Symbol(name, real=True)) for name in names)
    entries = [isinstance(s, MatrixElement) for s in leaves]
    if all(entries):
        return leaves
    if any(entries):
        raise DynamicsError("the loss mixes Symbol targets and entries of a MatrixSymbol "
                            "target; use one kind.")
    return list(leaves)
