"""The gradient of the per-observation loss in plain scalar symbols, for evaluators that
read expression trees (the double-double reference of ``numeric``)."""

from __future__ import annotations

from typing import Any

import sympy as sp

from ._calculus import real_jacobian
from ._dynamics import Dynamics, check_loss, check_targets

__all__ = ["ScalarLossGradient", "scalar_loss_gradient"]


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
