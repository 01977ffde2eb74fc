"""Hypothesis strategies for Neural-ODE gradient problems.

Every drawn problem is well posed by construction, not by filtering: each family of
dynamics has a bound on how fast solutions can grow, the parameters are drawn inside the
box that keeps that bound below ``max_rate``, and the time span below ``max_span``, so
``|z(t)| <= (|z0| + c) e^{max_rate * max_span}`` over the whole span (polynomial dynamics are
kept bounded by cubic damping instead). A failure found with these strategies is a gradient
bug, not an overflow.

Families (``f`` for state ``z`` in R^n, parameters ``theta``):

- ``linear``: ``f = W z``; Lipschitz constant ``|W|_2 <= |W|_F``.
- ``affine``: ``f = W z + c``.
- ``mlp``: ``f = A act(B z + b)`` with ``act`` in tanh, sigmoid, softplus, sin (all with
  ``|act'| <= 1``); Lipschitz ``<= |A| |B|``.
- ``polynomial``: ``f_i = -z_i^3 + sum_j c_ij z_j + sum_{j<=k} q_ijk z_j z_k``: the cubic
  damping dominates, so solutions stay bounded.
- time-dependent variants multiply ``f`` by ``1 + sin(omega t) / 2`` (``omega`` a parameter),
  which at most multiplies the growth rate by 3/2.

``stiff_linear_dynamics`` draws whole stiff problems instead: ``f = W z`` with ``W``
symmetric negative definite (eigenvalues spread over up to six decades), so that
``|z(t)| <= |z0|`` and only the stiff solver ``rodas4`` handles them in few steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import sympy as sp
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from symbolic import Dynamics

from ._problems import Problem

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "LOSSES",
    "MAX_SPREAD",
    "affine_dynamics",
    "linear_dynamics",
    "mlp_dynamics",
    "observation_times",
    "parameters",
    "polynomial_dynamics",
    "problems",
    "states",
    "stiff_linear_dynamics",
]

#: Elementwise activations ``mlp_dynamics`` draws from.
ACTIVATIONS = ("tanh", "sigmoid", "softplus", "sin")
#: Families of dynamics ``problems`` draws from: ``linear_dynamics``, ``affine_dynamics``,
#: ``mlp_dynamics`` and ``polynomial_dynamics``.
FAMILIES = ("linear", "affine", "mlp", "polynomial")
#: Smooth per-observation losses, by name; compiled once per (dynamics, loss) pair.
LOSSES = ("half_squared_norm", "squared_distance", "linear", "log_cosh")
#: Growth-rate factor of the time-dependent modulation 1 + sin(omega t)/2.
_TIME_FACTOR = 1.5

_ACTIVATION_FUNCTIONS = {
    "tanh": sp.tanh,
    "sigmoid": lambda x: 1 / (1 + sp.exp(-x)),
    "softplus": lambda x: sp.log(1 + sp.exp(x)),
    "sin": sp.sin,
}


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgument(f"{name}={value!r} must be an integer >= {minimum}")


def _check_range(lo_name: str, lo, hi_name: str, hi) -> None:
    if lo > hi:
        raise InvalidArgument(f"{lo_name}={lo!r} must not exceed {hi_name}={hi!r}")


def _check_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
        value > 0 and math.isfinite(value)
    ):
        raise InvalidArgument(f"{name}={value!r} must be a finite number > 0")


# -- dynamics --------------------------------------------------------------------------


def _modulate(rhs: list, t: sp.Symbol, omega: sp.Symbol) -> list:
    return [(1 + sp.sin(omega * t) / 2) * e for e in rhs]


@functools.cache
def _build_matrix(n: int, hidden: int, activation: str, time_dependent: bool) -> Dynamics:
    """``f = A act.(B z + b)`` in matrix form (theta = [A, B, b] row-major, then omega): the
    same parameters, in the same order, as the elementwise ``mlp`` family."""
    z = sp.MatrixSymbol("z", n, 1)
    A, B = sp.MatrixSymbol("A", n, hidden), sp.MatrixSymbol("B", hidden, n)
    bias = sp.MatrixSymbol("beta", hidden, 1)
    rhs = A * (B * z + bias).applyfunc(_ACTIVATION_FUNCTIONS[activation])
    if time_dependent:
        t, omega = sp.Symbol("t"), sp.Symbol("omega")
        return Dynamics(rhs=(1 + sp.sin(omega * t) / 2) * rhs, state=z,
                        params=[A, B, bias, omega], time=t)
    return Dynamics(rhs=rhs, state=z, params=[A, B, bias])


@functools.cache
def _build(family: str, n: int, hidden: int, activation: str, time_dependent: bool) -> Dynamics:
    """The symbolic dynamics of a family (cached: the structure does not depend on the
    numbers, so each is compiled once per loss)."""
    z = sp.symbols(f"z0:{n}")
    zv = sp.Matrix(z)
    t = sp.Symbol("t")
    if family in ("linear", "affine"):
        W = sp.Matrix(n, n, sp.symbols(f"w0:{n * n}"))
        rhs = W * zv
        params = list(W)
        if family == "affine":
            c = sp.Matrix(sp.symbols(f"c0:{n}"))
            rhs = rhs + c
            params += list(c)
        rhs = list(rhs)
    elif family == "mlp":
        A = sp.Matrix(n, hidden, sp.symbols(f"a0:{n * hidden}"))
        B = sp.Matrix(hidden, n, sp.symbols(f"b0:{hidden * n}"))
        bias = sp.Matrix(sp.symbols(f"beta0:{hidden}"))
        act = _ACTIVATION_FUNCTIONS[activation]
        rhs = list(A * (B * zv + bias).applyfunc(act))
        params = [*A, *B, *bias]
    elif family == "polynomial":
        linear = sp.Matrix(n, n, sp.symbols(f"c0:{n * n}"))
        pairs = [(j, k) for j in range(n) for k in range(j, n)]
        quad = sp.symbols(f"q0:{n * len(pairs)}")
        rhs = []
        for i in range(n):
            expr = -z[i] ** 3 + sum(linear[i, j] * z[j] for j in range(n))
            expr += sum(quad[i * len(pairs) + m] * z[j] * z[k] for m, (j, k) in enumerate(pairs))
            rhs.append(expr)
        params = [*linear, *quad]
    elif family == "mlp_matrix":
        return _build_matrix(n, hidden, activation, time_dependent)
    else:  # pragma: no cover - guarded by the public strategies
        raise InvalidArgument(f"unknown family {family!r}")
    if time_dependent:
        omega = sp.Symbol("omega")
        rhs = _modulate(rhs, t, omega)
        params.append(omega)
        return Dynamics(rhs=rhs, state=z, params=params, time=t)
    return Dynamics(rhs=rhs, state=z, params=params)


def _dynamics_strategy(family: str, min_n: int, max_n: int, time_dependent: bool | None,
                       hidden: Sequence[int] = (0,), activations: Sequence[str] = ("tanh",)):
    _check_int("min_n", min_n, 1)
    _check_int("max_n", max_n, 1)
    _check_range("min_n", min_n, "max_n", max_n)
    if time_dependent not in (None, True, False):
        raise InvalidArgument(f"time_dependent={time_dependent!r} must be True, False or None")
    times = st.booleans() if time_dependent is None else st.just(time_dependent)
    return st.builds(
        _build,
        st.just(family),
        st.integers(min_n, max_n),
        st.sampled_from(list(hidden)),
        st.sampled_from(list(activations)),
        times,
    )


def linear_dynamics(*, min_n: int = 1, max_n: int = 3, time_dependent: bool | None = False):
    """``f = W z`` (``W`` row-major in ``theta``); time-dependent: times ``1 + sin(omega t)/2``."""
    return _dynamics_strategy("linear", min_n, max_n, time_dependent)


def affine_dynamics(*, min_n: int = 1, max_n: int = 3, time_dependent: bool | None = False):
    """``f = W z + c``."""
    return _dynamics_strategy("affine", min_n, max_n, time_dependent)


#: Widest hidden layer of each form: matrix form is derived and compiled as a handful of
#: matrix operations whatever the width; entry by entry, width costs derivation time.
MAX_HIDDEN = {"elementwise": 16, "matrix": 256}


def mlp_dynamics(*, min_n: int = 1, max_n: int = 3, min_hidden: int = 1, max_hidden: int = 4,
                 activations: Sequence[str] = ACTIVATIONS,
                 time_dependent: bool | None = False, form: str = "elementwise"):
    """``f = A act(B z + b)``, one hidden layer with a smooth activation.

    ``form="matrix"`` draws the same networks written with matrix symbols (``A``, ``B``,
    ``beta``), the form for network sizes: hidden widths up to 256.
    """
    if form not in MAX_HIDDEN:
        raise InvalidArgument(f"form={form!r} must be 'elementwise' or 'matrix'")
    _check_int("min_hidden", min_hidden, 1)
    _check_int("max_hidden", max_hidden, 1)
    _check_range("min_hidden", min_hidden, "max_hidden", max_hidden)
    if max_hidden > MAX_HIDDEN[form]:
        raise InvalidArgument(
            f"max_hidden={max_hidden} exceeds {MAX_HIDDEN[form]} for form={form!r}"
            + ("; use form='matrix' for wider networks" if form == "elementwise" else ""))
    activations = tuple(activations)
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if not activations or unknown:
        raise InvalidArgument(
            f"activations={activations!r} must be a non-empty subset of {ACTIVATIONS}"
        )
    return _dynamics_strategy("mlp" if form == "elementwise" else "mlp_matrix", min_n, max_n,
                              time_dependent, hidden=range(min_hidden, max_hidden + 1),
                              activations=activations)


def polynomial_dynamics(*, min_n: int = 1, max_n: int = 2,
                        time_dependent: bool | None = False):
    """``f_i = -z_i^3 + linear + quadratic terms``: bounded by cubic damping."""
    return _dynamics_strategy("polynomial", min_n, max_n, time_dependent)


# -- inputs ----------------------------------------------------------------------------


#: Values are drawn on a grid of this many steps per unit of the bound: they shrink to 0 or
#: short decimals (readable failures), and never to magnitudes like 1e-300 at which every
#: difference quotient, complex step included, loses its meaning.
GRID = 1000


def _grid_floats(max_abs: float):
    return st.integers(-GRID, GRID).map(lambda k: k * max_abs / GRID)


def states(n: int, *, min_batch: int = 1, max_batch: int = 3, max_abs: float = 1.5):
    """Initial states ``z0`` of shape ``(B, n)``, entries in ``[-max_abs, max_abs]``."""
    _check_int("n", n, 1)
    _check_int("min_batch", min_batch, 1)
    _check_int("max_batch", max_batch, 1)
    _check_range("min_batch", min_batch, "max_batch", max_batch)
    _check_positive("max_abs", max_abs)
    return st.integers(min_batch, max_batch).flatmap(
        lambda b: hnp.arrays(np.float64, (b, n), elements=_grid_floats(max_abs))
    )


def parameters(p: int, *, max_abs: float = 1.0):
    """A parameter vector ``theta`` of shape ``(p,)``, entries in ``[-max_abs, max_abs]``."""
    _check_int("p", p, 0)
    _check_positive("max_abs", max_abs)
    return hnp.arrays(np.float64, (p,), elements=_grid_floats(max_abs))


def _times_from(t0: float, gaps: Sequence[float]) -> np.ndarray:
    return np.array([t0, *(t0 + np.cumsum(gaps))])


def observation_times(*, min_observations: int = 1, max_observations: int = 3,
                      min_gap: float = 0.1, max_span: float = 2.0, max_start: float = 1.0):
    """Strictly increasing ``times`` ``(N+1,)``: a start in ``[-max_start, max_start]`` and
    ``N`` gaps of at least ``min_gap`` whose sum is at most ``max_span``."""
    _check_int("min_observations", min_observations, 1)
    _check_int("max_observations", max_observations, 1)
    _check_range("min_observations", min_observations, "max_observations", max_observations)
    _check_positive("min_gap", min_gap)
    _check_positive("max_span", max_span)
    if min_observations * min_gap > max_span:
        raise InvalidArgument(
            f"min_observations={min_observations} gaps of min_gap={min_gap} do not fit in "
            f"max_span={max_span}"
        )
    if max_start < 0:
        raise InvalidArgument(f"max_start={max_start!r} must be >= 0")

    @st.composite
    def draw_times(draw):
        count = draw(st.integers(min_observations, max_observations))
        count = min(count, int(max_span // min_gap))
        per_gap = max_span / count
        gaps = [min_gap + (per_gap - min_gap) * draw(st.integers(0, GRID)) / GRID
                for _ in range(count)]
        start = max_start * draw(st.integers(-GRID, GRID)) / GRID
        return _times_from(start, gaps)

    return draw_times()


# -- losses and whole problems ---------------------------------------------------------


def _loss(name: str, dynamics: Dynamics) -> sp.Expr:
    z = dynamics.state
    if name == "half_squared_norm":
        return sp.Rational(1, 2) * sum(zi**2 for zi in z)
    if name == "squared_distance":
        return sum((zi - sp.Rational((-1) ** i, 2)) ** 2 for i, zi in enumerate(z))
    if name == "linear":
        return sum((-1) ** i * (i + 1) * zi for i, zi in enumerate(z))
    if name == "log_cosh":
        return sum(sp.log(sp.cosh(zi)) for zi in z)
    raise InvalidArgument(f"unknown loss {name!r}; choose from {LOSSES}")


def _param_count(family: str, n: int, hidden: int, time_dependent: bool) -> int:
    count = {
        "linear": n * n,
        "affine": n * n + n,
        "mlp": 2 * n * hidden + hidden,
        "polynomial": n * n + n * n * (n + 1) // 2,
    }[family]
    return count + (1 if time_dependent else 0)


def _parameter_box(family: str, n: int, hidden: int, time_dependent: bool,
                   max_rate: float) -> np.ndarray:
    """Per-parameter bound that keeps the family's growth rate below ``max_rate``."""
    p = _param_count(family, n, hidden, time_dependent)
    rate = max_rate / (_TIME_FACTOR if time_dependent else 1.0)
    box = np.full(p, 1.0)
    if family in ("linear", "affine"):
        box[: n * n] = rate / n  # |W|_2 <= |W|_F <= n max|w_ij|
    elif family == "mlp":
        scale = math.sqrt(rate / (n * hidden))  # |A| |B| <= n h max|a| max|b| <= rate
        box[: 2 * n * hidden] = scale
    elif family == "polynomial":
        box[:] = rate / n
    if time_dependent:
        box[-1] = 3.0  # omega, the modulation frequency
    return box


def _structures(families, max_n, max_params, time_dependent, activations=ACTIVATIONS,
                max_hidden=3):
    """Every (family, n, hidden, activation, time_dependent) within the bounds, smallest
    first so that shrinking leads to small problems."""
    found = []
    for family in families:
        for n in range(1, (min(max_n, 2) if family == "polynomial" else max_n) + 1):
            for hidden in (range(1, max_hidden + 1) if family == "mlp" else (0,)):
                for act in (activations if family == "mlp" else ("tanh",)):
                    for td in ((False, True) if time_dependent is None else (time_dependent,)):
                        p = _param_count(family, n, hidden, td)
                        if p <= max_params:
                            found.append((p, family, n, hidden, act, td))
    found.sort(key=lambda item: (item[0], FAMILIES.index(item[1]), item[2:]))
    return [item[1:] for item in found]


@st.composite
def _problem(draw, structures, max_batch, max_observations, max_span, max_rate, losses,
             form="elementwise"):
    family, n, hidden, activation, td = draw(st.sampled_from(structures))
    if family == "mlp" and form == "matrix":
        dynamics = _build_matrix(n, hidden, activation, td)
    else:
        dynamics = _build(family, n, hidden, activation, td)
    box = _parameter_box(family, n, hidden, td, max_rate)
    theta = draw(parameters(dynamics.p, max_abs=1.0)) * box
    z0 = draw(states(n, max_batch=max_batch))
    times = draw(observation_times(max_observations=max_observations, max_span=max_span,
                                   min_gap=min(0.1, max_span / max_observations)))
    loss_name = draw(st.sampled_from(losses))
    label = family if family != "mlp" else f"mlp[{activation}, h={hidden}]"
    if family == "mlp" and form == "matrix":
        label += "(matrix)"
    return Problem(
        dynamics=dynamics,
        loss=_loss(loss_name, dynamics),
        z0=z0,
        theta=theta,
        times=times,
        name=f"{label}-n{n}-p{dynamics.p}{'-t' if td else ''}-{loss_name}",
        description=f"drawn {label} problem",
    )


def problems(*, families: Sequence[str] = FAMILIES, max_n: int = 3, max_params: int = 16,
             max_batch: int = 3, max_observations: int = 3, max_span: float = 2.0,
             max_rate: float = 1.5, time_dependent: bool | None = None,
             losses: Sequence[str] = LOSSES, max_hidden: int = 3,
             form: str = "elementwise"):
    """Whole gradient problems (:class:`verification.Problem`), well posed by construction.

    Parameters
    ----------
    families : sequence of str
        Subset of :data:`FAMILIES`.
    max_n, max_params, max_batch, max_observations : int
        Bounds on the state size, parameter count, batch and observation count.
    max_span : float
        Longest time span ``t_N - t_0``.
    max_rate : float
        Bound on the growth (or contraction) rate of solutions, the Lipschitz constant of
        ``f`` in ``z``: ``max_rate * max_span`` bounds the log of the growth over the span,
        and the stiffness the solvers see.
    time_dependent : bool or None
        Only autonomous (False), only time-dependent (True) or both (None).
    losses : sequence of str
        Subset of :data:`LOSSES`.
    max_hidden : int
        Widest hidden layer of the ``mlp`` family.
    form : {"elementwise", "matrix"}
        How the ``mlp`` family is written: ``"matrix"`` with matrix symbols (the form for
        networks; widths up to 256), the other families always elementwise.
    """
    if form not in MAX_HIDDEN:
        raise InvalidArgument(f"form={form!r} must be 'elementwise' or 'matrix'")
    _check_int("max_hidden", max_hidden, 1)
    if max_hidden > MAX_HIDDEN[form]:
        raise InvalidArgument(f"max_hidden={max_hidden} exceeds {MAX_HIDDEN[form]} for "
                              f"form={form!r}")
    families = tuple(families)
    if not families or any(f not in FAMILIES for f in families):
        raise InvalidArgument(f"families={families!r} must be a non-empty subset of {FAMILIES}")
    losses = tuple(losses)
    if not losses or any(name not in LOSSES for name in losses):
        raise InvalidArgument(f"losses={losses!r} must be a non-empty subset of {LOSSES}")
    for name, value in (("max_n", max_n), ("max_batch", max_batch),
                        ("max_observations", max_observations)):
        _check_int(name, value, 1)
    _check_int("max_params", max_params, 1)
    _check_positive("max_span", max_span)
    _check_positive("max_rate", max_rate)
    if time_dependent not in (None, True, False):
        raise InvalidArgument(f"time_dependent={time_dependent!r} must be True, False or None")
    structures = _structures(families, max_n, max_params, time_dependent,
                             max_hidden=max_hidden)
    if not structures:
        raise InvalidArgument(
            f"max_params={max_params} is below the smallest parameter count of the families "
            f"{families} (time_dependent={time_dependent}); raise max_params"
        )
    return _problem(structures, max_batch, max_observations, max_span, max_rate, losses,
                    form)


#: Largest eigenvalue spread stiff_linear_dynamics draws: beyond it the exact reference
#: (the matrix exponential) and float64 solves lose digits to the conditioning.
MAX_SPREAD = 1e6


def _rotation(n: int, angles: Sequence[float]) -> np.ndarray:
    """An orthogonal ``n x n`` matrix: Givens rotations by ``angles`` over every pair."""
    q = np.eye(n)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    for (i, j), angle in zip(pairs, angles, strict=True):
        g = np.eye(n)
        c, s_ = math.cos(angle), math.sin(angle)
        g[i, i] = g[j, j] = c
        g[i, j], g[j, i] = -s_, s_
        q = q @ g
    return q


@st.composite
def _stiff_linear(draw, min_n, max_n, min_spread, max_spread, min_rate, max_rate, max_batch,
                  max_observations, max_span, losses):
    n = draw(st.integers(min_n, max_n))
    rate = min_rate * (max_rate / min_rate) ** (draw(st.integers(0, GRID)) / GRID)
    spread = min_spread * (max_spread / min_spread) ** (draw(st.integers(0, GRID)) / GRID)
    inner = sorted(draw(st.integers(0, GRID)) / GRID for _ in range(max(n - 2, 0)))
    exponents = ([0.0, *inner, 1.0] if n > 1 else [0.0])[:n]
    eigenvalues = -rate * spread ** np.array(exponents)
    angles = [math.pi * draw(st.integers(-GRID, GRID)) / GRID
              for _ in range(n * (n - 1) // 2)]
    q = _rotation(n, angles)
    w = q @ np.diag(eigenvalues) @ q.T
    dynamics = _build("linear", n, 0, "tanh", False)
    z0 = draw(states(n, max_batch=max_batch))
    times = draw(observation_times(max_observations=max_observations, max_span=max_span,
                                   min_gap=min(0.1, max_span / max_observations)))
    loss_name = draw(st.sampled_from(losses))
    return Problem(
        dynamics=dynamics,
        loss=_loss(loss_name, dynamics),
        z0=z0,
        theta=((w + w.T) / 2).reshape(-1),
        times=times,
        name=f"stiff-linear-n{n}-spread{spread:.0e}-{loss_name}",
        description=f"drawn stiff linear problem, eigenvalues {np.round(eigenvalues, 3)}",
    )


def stiff_linear_dynamics(*, min_n: int = 2, max_n: int = 3, min_spread: float = 1e2,
                          max_spread: float = MAX_SPREAD, min_rate: float = 0.1,
                          max_rate: float = 2.0, max_batch: int = 2,
                          max_observations: int = 3, max_span: float = 2.0,
                          losses: Sequence[str] = LOSSES):
    """Stiff linear problems (:class:`verification.Problem`), well posed by construction.

    ``f = W z`` with ``W = Q diag(lambda) Q^T``, ``Q`` a rotation and the eigenvalues
    ``lambda`` negative, from ``-rate`` (the slow mode) to ``-rate * spread``: ``W`` is
    symmetric negative definite, so ``|z(t)| <= |z0|`` on every span. ``theta`` holds ``W``
    row-major (the ``linear`` family's dynamics), so the exact reference applies.

    Parameters
    ----------
    min_n, max_n : int
        State size (``n = 1`` has a single eigenvalue: no spread).
    min_spread, max_spread : float
        Ratio of the fastest to the slowest eigenvalue, drawn log-uniformly; at most
        :data:`~verification.strategies.MAX_SPREAD` (1e6).
    min_rate, max_rate : float
        Magnitude of the slowest eigenvalue, drawn log-uniformly.
    max_batch, max_observations : int
    max_span : float
        Longest time span ``t_N - t_0``.
    losses : sequence of str
        Subset of :data:`LOSSES`.
    """
    for name, value in (("min_n", min_n), ("max_n", max_n), ("max_batch", max_batch),
                        ("max_observations", max_observations)):
        _check_int(name, value, 1)
    _check_range("min_n", min_n, "max_n", max_n)
    for name, value in (("min_spread", min_spread), ("max_spread", max_spread),
                        ("min_rate", min_rate), ("max_rate", max_rate),
                        ("max_span", max_span)):
        _check_positive(name, value)
    if min_spread < 1:
        raise InvalidArgument(f"min_spread={min_spread!r} must be >= 1 (a ratio of the "
                              "fastest to the slowest eigenvalue)")
    if max_spread > MAX_SPREAD:
        raise InvalidArgument(f"max_spread={max_spread!r} must not exceed {MAX_SPREAD:g}")
    _check_range("min_spread", min_spread, "max_spread", max_spread)
    _check_range("min_rate", min_rate, "max_rate", max_rate)
    losses = tuple(losses)
    if not losses or any(name not in LOSSES for name in losses):
        raise InvalidArgument(f"losses={losses!r} must be a non-empty subset of {LOSSES}")
    return _stiff_linear(min_n, max_n, min_spread, max_spread, min_rate, max_rate, max_batch,
                         max_observations, max_span, losses)

