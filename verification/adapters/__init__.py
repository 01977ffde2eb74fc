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
    """An ``nn.Module`` computing ``f`` from the SymPy expressions (see
    :func:`verification.adapters._torch.torch_module`; needs ``adjoint-verify[torch]``)."""
    require("torch", "torch_module")
    from ._torch import torch_module as build

    return build(dynamics, theta, **options)


def torchdiffeq_gradient(dynamics, loss, **options: Any) -> LibraryGradient:
    """torchdiffeq's gradient as ``grad_fn(z0, theta, times)`` (see
    :func:`verification.adapters._torch.torchdiffeq_gradient`; needs
    ``adjoint-verify[torch]``)."""
    require("torch", "torchdiffeq_gradient")
    from ._torch import torchdiffeq_gradient as build

    return build(dynamics, loss, **options)


def jax_function(dynamics):
    """``f`` as a diffrax vector field ``f(t, z, theta)`` (see
    :func:`verification.adapters._jax.jax_function`; needs ``adjoint-verify[jax]``)."""
    require("jax", "jax_function")
    from ._jax import jax_function as build

    return build(dynamics)


def diffrax_gradient(dynamics, loss, **options: Any) -> LibraryGradient:
    """diffrax's gradient as ``grad_fn(z0, theta, times)`` (see
    :func:`verification.adapters._jax.diffrax_gradient`; needs ``adjoint-verify[jax]``)."""
    require("jax", "diffrax_gradient")
    from ._jax import diffrax_gradient as build

    return build(dynamics, loss, **options)
