"""Dynamics and loss as functions of another array library's arrays (PyTorch, JAX).

This is the one place where the SymPy expressions become code for the libraries under
audit: ``verification.adapters`` builds its ``nn.Module`` and its JAX vector field from the
:class:`BackendForm` made here, so the library differentiates exactly the ``f`` that the
references of adjoint-verify are derived from. Matrix-form dynamics are printed from their
graph of matrix operations (:mod:`symbolic._matrix_graph`): a few products with the
parameter matrices and elementwise functions, the batch in front, as a person writes a
network in PyTorch or JAX.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from ._dynamics import Dynamics, check_loss, check_targets
from ._matrix_eval import GraphEvaluator

__all__ = ["BACKENDS", "BackendForm", "backend_form"]

#: The array libraries ``backend_form`` prints for: name -> (module to import, SymPy's
#: ``lambdify`` module name).
BACKENDS = {"torch": ("torch", "torch"), "jax": ("jax.numpy", "jax")}


@dataclass(frozen=True)
class BackendForm:
    """``f`` and the per-observation loss as functions of one array library's arrays.

    Attributes
    ----------
    rhs : callable ``rhs(z, theta, t) -> dz/dt``
        ``z`` of shape ``(..., n)`` (any batch shape in front), ``theta`` a sequence of
        parameter arrays of shapes ``param_shapes`` (:meth:`unflatten` makes it from the flat
        ``(p,)`` vector), ``t`` a 0-d array (ignored by autonomous dynamics); returns an
        array of the shape of ``z``.
    loss : callable ``loss(z, y) -> l``
        ``z`` of shape ``(..., n)``, ``y`` the ``k`` target values of shape ``(..., k)`` (or
        None without targets); returns shape ``(...)``.
    backend : str
    n, p, k : int
        State size, parameter count and number of target symbols of the loss.
    autonomous : bool
    param_names : tuple of str
        The parameter arrays' names, in ``theta`` order: every scalar parameter in
        elementwise form, every parameter matrix (``W1``, ``b1``) in matrix form.
    param_shapes : tuple of tuple of int
        Their shapes: ``()`` for a scalar, ``(rows, cols)`` for a parameter matrix (a column
        ``b1`` is ``(h, 1)``); flattened row-major and concatenated they make ``theta``.
    """

    rhs: Callable[..., Any]
    loss: Callable[..., Any]
    backend: str
    n: int
    p: int
    k: int
    autonomous: bool
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]

    def unflatten(self, theta: Any) -> list[Any]:
        """The flat ``(p,)`` parameter vector (of this backend's arrays) as the sequence of
        parameter arrays ``rhs`` takes: slices reshaped to ``param_shapes``."""
        out, start = [], 0
        for shape in self.param_shapes:
            size = int(np.prod(shape, dtype=int))
            piece = theta[start:start + size]
            out.append(piece.reshape(shape) if shape else piece[0])
            start += size
        return out


class _Stacker:
    """Stacks a list of lambdified entries into one array with the entries last.

    An entry that does not depend on the batched arguments comes back from ``lambdify`` as
    a number or 0-d array; it is broadcast to the batch shape of ``like``.
    """

    def __init__(self, backend: str):
        self.backend = backend
        self.xp = importlib.import_module(BACKENDS[backend][0])

    def __call__(self, values: Sequence[Any], like: Any) -> Any:
        xp = self.xp
        if self.backend == "torch":
            shaped = [xp.as_tensor(v, dtype=like.dtype, device=like.device).expand(like.shape)
                      for v in values]
            return xp.stack(shaped, dim=-1)
        shaped = [xp.broadcast_to(xp.asarray(v, dtype=like.dtype), like.shape) for v in values]
        return xp.stack(shaped, axis=-1)


def backend_form(dynamics: Dynamics, loss: Any, backend: str, targets: Any = ()) -> BackendForm:
    """Print ``f`` and ``loss`` for ``backend`` (``"torch"`` or ``"jax"``).

    Parameters
    ----------
    dynamics : Dynamics
    loss : sympy.Expr
        The per-observation loss in the state symbols (and ``targets``).
    backend : {"torch", "jax"}
        The library must be installed; SymPy's printer for it writes the code.
    targets : sequence of Symbols, optional
        Data symbols of the loss.

    Returns
    -------
    BackendForm
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {', '.join(map(repr, BACKENDS))}, got "
                         f"{backend!r}.")
    loss = check_loss(dynamics, loss, targets)
    targets = check_targets(dynamics, targets)
    module = BACKENDS[backend][1]
    stack = _Stacker(backend)
    if dynamics.matrix is not None:
        return _matrix_form(dynamics, loss, backend, targets, stack)
    state, params = list(dynamics.state), list(dynamics.params)
    time = dynamics.time if dynamics.time is not None else sp.Dummy("t")
    f_entries = sp.lambdify([*state, *params, time], list(dynamics.rhs), modules=module,
                            cse=True, dummify=True)
    loss_fn = sp.lambdify([*state, *targets], loss, modules=module, dummify=True)
    n, p, k = dynamics.n, dynamics.p, len(targets)

    def rhs(z, theta, t):
        columns = [z[..., j] for j in range(n)]
        return stack(f_entries(*columns, *list(theta)[:p], t), like=columns[0])

    def per_observation_loss(z, y=None):
        columns = [z[..., j] for j in range(n)]
        data = [y[..., j] for j in range(k)] if k else []
        return stack([loss_fn(*columns, *data)], like=columns[0])[..., 0]

    return BackendForm(
        rhs=rhs, loss=per_observation_loss, backend=backend, n=n, p=p, k=k,
        autonomous=dynamics.autonomous, param_names=tuple(str(s) for s in params),
        param_shapes=((),) * p,
    )


def _loss_function(dynamics: Dynamics, loss: sp.Expr, targets: Sequence[Any], module: str,
                   stack: _Stacker) -> Callable[..., Any]:
    """The per-observation loss of matrix-form dynamics (an expression in the entries
    ``z[i, 0]``) as a function of ``z`` of shape ``(..., n)``."""
    spec = dynamics.matrix
    entries = [sp.Dummy(f"z{i}") for i in range(dynamics.n)]
    explicit = loss.xreplace({spec.state[i, 0]: e for i, e in enumerate(entries)})
    loss_fn = sp.lambdify([*entries, *targets], explicit, modules=module, dummify=True)
    k = len(targets)

    def per_observation_loss(z, y=None):
        columns = [z[..., j] for j in range(dynamics.n)]
        data = [y[..., j] for j in range(k)] if k else []
        return stack([loss_fn(*columns, *data)], like=columns[0])[..., 0]

    return per_observation_loss


def _matrix_form(dynamics: Dynamics, loss: sp.Expr, backend: str, targets: Sequence[Any],
                 stack: _Stacker) -> BackendForm:
    """Matrix-form ``f`` evaluated node by node on the graph, the batch in front: a
    state-dependent column ``x`` is an array ``(..., m)``, so ``W x`` is ``x @ W.T``; a
    parameter-only node is the matrix itself."""
    spec = dynamics.matrix
    module = BACKENDS[backend][1]
    rhs = GraphEvaluator(spec, module, stack.xp).rhs
    leaves = list(spec.leaves)
    shapes = tuple(shape for _, _, shape in spec.offsets)
    return BackendForm(
        rhs=rhs, loss=_loss_function(dynamics, loss, targets, module, stack), backend=backend,
        n=dynamics.n, p=dynamics.p, k=len(targets), autonomous=dynamics.autonomous,
        param_names=tuple(str(leaf) for leaf in leaves), param_shapes=shapes,
    )
