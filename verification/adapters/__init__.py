"""Audit the libraries Neural-ODE users run, from the same SymPy dynamics.

``torch_module`` and ``jax_function`` compute ``f`` from the SymPy expressions;
``torchdiffeq_gradient`` and ``diffrax_gradient`` return a ``grad_fn(z0, theta, times)`` for
:func:`verification.audit_gradient` whose gradient the library computes entirely (its
solver, its tolerances, its adjoint or backpropagation).

Importing this package needs neither torch nor JAX: each function imports its library when
called, and raises :class:`MissingExtra` (one line, naming the ``pip install`` that fixes
it) when the extra is not installed.
"""

from __future__ import annotations

from typing import Any

from ._extras import EXTRAS as EXTRAS
from ._extras import MissingExtra as MissingExtra
from ._extras import installed as installed
from ._extras import require
from ._library import LibraryGradient as LibraryGradient

__all__ = [
    "EXTRAS",
    "LibraryGradient",
    "MissingExtra",
    "diffrax_gradient",
    "installed",
    "jax_function",
    "torch_module",
    "torchdiffeq_gradient",
]


def torch_module(dynamics, theta=None, **options: Any):
    """An ``nn.Module`` computing ``f`` from the SymPy expressions.

    Needs ``adjoint-verify[torch]``.

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    theta : array_like, shape (p,), optional
        Initial parameter values in ``dynamics.params`` order (default zeros).
    dtype : torch.dtype or str
        ``torch.float64`` (default) or ``torch.float32``.

    Returns
    -------
    SympyModule
        ``module(t, z)`` with ``z`` of shape ``(..., n)``; parameters in ``theta`` order.
    """
    require("torch", "torch_module")
    from ._torch import torch_module as build

    return build(dynamics, theta, **options)


def torchdiffeq_gradient(dynamics, loss, **options: Any) -> LibraryGradient:
    """torchdiffeq's gradient of the loss, as ``grad_fn(z0, theta, times)``.

    Needs ``adjoint-verify[torch]``.

    ``odeint`` (``adjoint=False``) backpropagates through the solver; ``odeint_adjoint``
    (``adjoint=True``) solves torchdiffeq's adjoint system backwards, reconstructing ``z``
    by integrating it backwards from each observation. Both give time gradients.

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    loss : sympy.Expr
        Per-observation loss, summed over ``times[1:]`` and the batch.
    adjoint : bool
        ``odeint_adjoint`` instead of ``odeint``.
    method : str
        torchdiffeq's solver: adaptive (``"dopri5"``, ``"bosh3"``, ...) or fixed-grid
        (``"euler"``, ``"midpoint"``, ``"rk4"`` = Kutta's 3/8 rule, ...).
    rtol, atol : float, optional
        Adaptive methods (default torchdiffeq's own, 1e-7 and 1e-9).
    steps : int, optional
        Fixed-grid methods: equal steps per observation interval, as ``numeric`` takes
        them (a ``grid_constructor``); the default is torchdiffeq's grid ``times`` itself,
        one step per interval.
    step_size : float, optional
        Fixed-grid methods: torchdiffeq's own constant step from ``times[0]``; observation
        times between grid points are interpolated linearly.
    options : dict, optional
        Further options passed to torchdiffeq unchanged.
    dtype : torch.dtype or str
        ``torch.float64`` (default) or ``torch.float32``: state, parameters and times.
    targets, data
        Data symbols of the loss and their values ``(N, B, k)`` or ``(N, k)``.

    Returns
    -------
    LibraryGradient
    """
    require("torch", "torchdiffeq_gradient")
    from ._torch import torchdiffeq_gradient as build

    return build(dynamics, loss, **options)


def jax_function(dynamics):
    """``f`` as a diffrax vector field ``f(t, z, theta)``.

    Needs ``adjoint-verify[jax]``.

    ``z`` is ``(..., n)``, ``theta`` the flat ``(p,)`` parameters in theta order (diffrax's
    ``args``; in matrix form the field reshapes its slices into the parameter matrices),
    ``t`` a scalar ignored where ``f`` does not depend on time.
    """
    require("jax", "jax_function")
    from ._jax import jax_function as build

    return build(dynamics)


def diffrax_gradient(dynamics, loss, **options: Any) -> LibraryGradient:
    """diffrax's gradient of the loss, as ``grad_fn(z0, theta, times)``.

    Needs ``adjoint-verify[jax]``.

    ``"recursive_checkpoint"`` and ``"direct"`` differentiate through diffrax's solve
    (``RecursiveCheckpointAdjoint``, ``DirectAdjoint``) and give time gradients;
    ``"backsolve"`` (``BacksolveAdjoint``) solves the continuous adjoint backwards and gives
    none (the returned ``grad_fn`` then returns ``(dz0, dtheta)``).

    Parameters
    ----------
    dynamics : symbolic.Dynamics
    loss : sympy.Expr
        Per-observation loss, summed over ``times[1:]`` and the batch.
    adjoint : {"recursive_checkpoint", "direct", "backsolve"}
    solver : str
        A diffrax solver by class name: ``"Dopri5"``, ``"Tsit5"``,
        ``"Bosh3"``, ``"Heun"``, ``"Ralston"``, ``"Midpoint"``, ``"Euler"``, ...
    rtol, atol : float, optional
        PID step-size control (default 1e-8, 1e-10).
    steps : int, optional
        Fixed steps: equal steps per observation interval, as ``numeric`` takes them.
    dt0 : float, optional
        Fixed steps: diffrax's constant step over the span (save times interpolated).
    max_steps : int
        diffrax's step budget.
    dtype : {"float64", "float32"}
    targets, data
        Data symbols of the loss and their values ``(N, B, k)`` or ``(N, k)``.

    Returns
    -------
    LibraryGradient
    """
    require("jax", "diffrax_gradient")
    from ._jax import diffrax_gradient as build

    return build(dynamics, loss, **options)
