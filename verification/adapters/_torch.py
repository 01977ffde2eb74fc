"""PyTorch and torchdiffeq from the SymPy dynamics: an ``nn.Module`` computing ``f``, and
torchdiffeq's own gradient of the loss as a ``grad_fn`` for ``audit_gradient``.

Imported only when an adapter is called: ``import verification`` never needs torch.
"""

from __future__ import annotations

import inspect
import keyword
import re
from typing import Any

import numpy as np
import torch
import torchdiffeq
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from numeric import InputError
from symbolic import Dynamics, DynamicsError, backend_form

from ._library import LibraryGradient

__all__ = ["TORCHDIFFEQ_MATCHING", "torch_module", "torchdiffeq_gradient"]

#: torchdiffeq's fixed-grid methods whose discrete map is one of ours (read from
#: torchdiffeq/_impl/fixed_grid.py, rk_common.py and fixed_adams.py): its "rk4" is Kutta's
#: 3/8 rule; its "explicit_adams" is the Adams–Bashforth map of numeric/_multistep.py
#: (a Runge–Kutta start, then orders 3 to 11), whose exact derivative is by complex step.
TORCHDIFFEQ_MATCHING = {"euler": "euler", "midpoint": "midpoint", "rk4": "rk4_38",
                        "heun2": "heun", "heun3": "heun3", "explicit_adams": "adams_bashforth"}
#: torchdiffeq's defaults, as its ``odeint`` declares them.
_DEFAULTS = inspect.signature(torchdiffeq.odeint).parameters
DEFAULT_RTOL = float(_DEFAULTS["rtol"].default)
DEFAULT_ATOL = float(_DEFAULTS["atol"].default)
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _torch_dtype(dtype: Any) -> torch.dtype:
    if dtype in _DTYPES.values():
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise InputError(f"`dtype` must be torch.float64 or torch.float32 (or their names), got "
                     f"{dtype!r}.")


def _parameter_names(names: tuple[str, ...]) -> list[str]:
    """Attribute names for the parameters: the symbols' names made identifiers, unique,
    and clear of ``nn.Module``'s own attributes."""
    out: list[str] = []
    for name in names:
        ident = re.sub(r"\W", "_", name)
        if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
            ident = f"p_{ident}"
        while ident in out or hasattr(torch.nn.Module, ident) or ident in ("form", "theta"):
            ident += "_"
        out.append(ident)
    return out


class SympyModule(torch.nn.Module):
    """``f(z, theta, t)`` of a :class:`symbolic.Dynamics` as an ``nn.Module``.

    ``forward(t, z)`` takes torchdiffeq's argument order; ``z`` is ``(..., n)`` and ``t`` a
    0-d tensor, ignored where ``f`` does not depend on time. In elementwise form each scalar
    parameter is one 0-d ``nn.Parameter`` named after its symbol; in matrix form each
    parameter matrix is one ``nn.Parameter`` of its shape (``W1`` ``(h, n)``, a column
    ``b1`` ``(h, 1)``), as in a hand-written network. They are registered in theta order,
    so ``torch.cat([q.reshape(-1) for q in module.parameters()])`` is ``theta``.
    """

    def __init__(self, dynamics: Dynamics, theta: np.ndarray, dtype: torch.dtype):
        super().__init__()
        self.form = backend_form(dynamics, 0, "torch")
        self._names = _parameter_names(self.form.param_names)
        values = self.form.unflatten(np.asarray(theta, dtype=float))
        for name, value in zip(self._names, values, strict=True):
            self.register_parameter(name, torch.nn.Parameter(torch.tensor(value, dtype=dtype)))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.form.rhs(z, [getattr(self, name) for name in self._names], t)

    def theta(self) -> torch.Tensor:
        """The parameters as one ``(p,)`` tensor in ``theta`` order."""
        return torch.cat([getattr(self, name).reshape(-1) for name in self._names]) \
            if self._names else torch.zeros(0)

    def extra_repr(self) -> str:
        return f"n={self.form.n}, p={self.form.p}, parameters={', '.join(self._names)}"


def torch_module(dynamics: Dynamics, theta=None, *, dtype: Any = torch.float64) -> SympyModule:
    """Build what :func:`verification.adapters.torch_module` documents."""
    if not isinstance(dynamics, Dynamics):
        raise DynamicsError(f"`dynamics` must be a symbolic.Dynamics, got "
                            f"{type(dynamics).__name__}.")
    values = np.zeros(dynamics.p) if theta is None else np.asarray(theta, dtype=float)
    if values.shape != (dynamics.p,):
        raise InputError(f"`theta` must have shape (p,) = ({dynamics.p},), got "
                         f"{values.shape}.")
    return SympyModule(dynamics, values, _torch_dtype(dtype))


def _grid_constructor(steps: int):
    """``steps`` equal steps in every observation interval, differentiable in the times:
    ``t_j + s_k (t_{j+1} - t_j)`` with ``s_k = k / steps``, the grid ``numeric`` replays."""

    def grid(func, y0, t):
        fractions = torch.linspace(0.0, 1.0, steps + 1, dtype=t.dtype, device=t.device)
        inner = t[:-1, None] + fractions[None, :-1] * (t[1:] - t[:-1])[:, None]
        return torch.cat([inner.reshape(-1), t[-1:]])

    return grid


def _check_method(method: Any, steps: Any, step_size: Any, rtol: Any, atol: Any) -> bool:
    """Whether ``method`` is a fixed-grid method, after checking the options that go with
    it."""
    if not isinstance(method, str) or method not in SOLVERS or method == "scipy_solver":
        names = ", ".join(repr(m) for m in SOLVERS if m != "scipy_solver")
        raise InputError(f"`method` must be one of torchdiffeq's solvers ({names}), got "
                         f"{method!r}.")
    fixed = issubclass(SOLVERS[method], FixedGridODESolver)
    if fixed and (rtol is not None or atol is not None):
        raise InputError(f"`rtol`/`atol` do not apply to torchdiffeq's fixed-grid {method!r}; "
                         "give `steps` (per observation interval) or `step_size`.")
    if not fixed and (steps is not None or step_size is not None):
        raise InputError(f"`steps`/`step_size` apply to fixed-grid methods, not to the "
                         f"adaptive {method!r}; give rtol/atol.")
    if steps is not None and step_size is not None:
        raise InputError("give `steps` (equal steps per observation interval) or "
                         "`step_size` (torchdiffeq's constant step over the span), not both.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise InputError(f"`steps` must be a positive integer, got {steps!r}.")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise InputError(f"`step_size` must be a number > 0, got {step_size!r}.")
    return fixed


def torchdiffeq_gradient(
    dynamics: Dynamics,
    loss,
    *,
    adjoint: bool = False,
    method: str = "dopri5",
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    options: dict | None = None,
    dtype: Any = torch.float64,
    targets=(),
    data=None,
) -> LibraryGradient:
    """Build what :func:`verification.adapters.torchdiffeq_gradient` documents."""
    fixed = _check_method(method, steps, step_size, rtol, atol)
    torch_dtype = _torch_dtype(dtype)
    form = backend_form(dynamics, loss, "torch", targets)
    solver_options = dict(options or {})
    if steps is not None:
        solver_options["grid_constructor"] = _grid_constructor(steps)
    if step_size is not None:
        solver_options["step_size"] = float(step_size)
    tolerances = {} if fixed else {
        "rtol": DEFAULT_RTOL if rtol is None else float(rtol),
        "atol": DEFAULT_ATOL if atol is None else float(atol),
    }
    integrate = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    own_grid = "step_size" in solver_options or "grid_constructor" in solver_options
    grid_steps = steps if steps is not None else (1 if fixed and not own_grid else None)

    def compute(z0, theta, times, data):
        module = SympyModule(dynamics, theta, torch_dtype)
        z = torch.tensor(z0, dtype=torch_dtype, requires_grad=True)
        t = torch.tensor(times, dtype=torch_dtype, requires_grad=True)
        extra = {"adjoint_params": tuple(module.parameters())} if adjoint else {}
        zs = integrate(module, z, t, method=method, options=solver_options, **tolerances,
                       **extra)
        y = None if data is None else torch.tensor(data, dtype=torch_dtype)
        total = sum(form.loss(zs[i], None if y is None else y[i - 1]).sum()
                    for i in range(1, len(times)))
        total.backward()
        grads = [q.grad if q.grad is not None else torch.zeros_like(q)
                 for q in module.parameters()]
        dtheta = torch.cat([q.reshape(-1) for q in grads]) if grads else torch.zeros(0)
        return (z.grad.double().numpy(), dtheta.double().detach().numpy(),
                t.grad.double().numpy())

    def reconstruction(z0, theta, times, data):
        """Largest relative drift of z integrated backwards over one interval, from the
        forward solution at its end, as torchdiffeq's adjoint does it."""
        module = SympyModule(dynamics, theta, torch_dtype)
        t = torch.tensor(times, dtype=torch_dtype)
        with torch.no_grad():
            zs = torchdiffeq.odeint(module, torch.tensor(z0, dtype=torch_dtype), t,
                                    method=method, options=solver_options, **tolerances)
            drift = 0.0
            for i in range(1, len(times)):
                back = torchdiffeq.odeint(module, zs[i], t[[i, i - 1]], method=method,
                                          options=solver_options, **tolerances)[-1]
                size = max(float(torch.linalg.norm(zs[i - 1])), np.finfo(float).tiny)
                drift = max(drift, float(torch.linalg.norm(back - zs[i - 1])) / size)
        return drift

    return LibraryGradient(
        library="torchdiffeq", mode="odeint_adjoint" if adjoint else "odeint", solver=method,
        dtype=str(torch_dtype).removeprefix("torch."), compute=compute, n=dynamics.n,
        p=dynamics.p, rtol=tolerances.get("rtol"), atol=tolerances.get("atol"),
        steps=grid_steps, step_size=solver_options.get("step_size"),
        matching_solver=TORCHDIFFEQ_MATCHING.get(method) if fixed else None, data=data,
        k=form.k, reconstruction=reconstruction if adjoint else None,
        remedy="backpropagate through odeint instead of odeint_adjoint",
    )
