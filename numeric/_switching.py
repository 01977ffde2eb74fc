"""Trajectories that meet a switch of ``f`` or of the loss: found, located, and refused or
reported (MATH.md, "Non-smooth and discontinuous dynamics").

Where a trajectory crosses a surface on which ``f`` jumps, the gradient contains a jump
term (the saltation matrix ``I + (f+ - f-) grad g^T / (grad g^T f-)``) that no method here
computes: every method refuses, naming the time and the switching function. Where it meets
a kink (``f`` continuous) or a switch in time alone, the gradient exists and needs no jump
term, but every solver converges only at first order across it: the gradient is computed
and the crossing is reported in ``info["nonsmooth"]``. Finite differences are refused
wherever the perturbations they take move a stage of the discrete solution across any
switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from symbolic import CompiledForm

from ._checks import SolverOptions, check_solver_options, observed
from ._discrete import FrozenGrid, replay
from ._errors import MethodUnavailable
from ._solve import Trajectory, solve_trajectory

__all__ = ["GUARD_RADIUS", "Crossing", "check_switches", "find_crossings"]

#: Interior points of each step, as fractions, at which the dense output is sampled besides
#: the step boundaries: a switch crossed and crossed back inside one step is still seen
#: unless both crossings fall between two samples.
_SAMPLES = (0.25, 0.5, 0.75)
#: Bisection on the dense output stops at this relative width of the bracket.
_BISECTION_STEPS = 60
#: Finite differences are refused when moving an input by this much (relative, at least
#: absolute 1e-4 times max(1, |x|)) moves the discrete solution across a switch: it is
#: above the largest step the differences take (2 eps^(1/3) ~ 1.2e-5 relative), so every
#: point a difference quotient evaluates lies inside the interval checked.
GUARD_RADIUS = 1e-4
#: The solve that finds crossings for the solver-free references (exact, high precision).
_SCAN_RTOL, _SCAN_ATOL, _SCAN_MAX_STEPS = 1e-10, 1e-12, 100_000


@dataclass(frozen=True)
class Crossing:
    """The first time a trajectory meets one switch.

    Attributes
    ----------
    t : float
        Where the branch of the switch changes, located to rounding on the dense output.
    sample : int
        The batch row whose trajectory meets it first.
    switch : symbolic Switch
        With ``kind`` ("jump", "kink" or "time") and ``describe()``.
    """

    t: float
    sample: int
    switch: Any

    def describe(self) -> str:
        return f"{self.switch.describe()} at t = {self.t:.6g} (sample {self.sample})"


def _on_surface(values: NDArray, switches) -> NDArray:
    """Where ``g = 0`` exactly (``g`` an integer, for integer-valued switches)."""
    integer = np.array([s.integer for s in switches], dtype=bool)
    return np.where(integer, values == np.floor(values), values == 0)


def _branches(values: NDArray, switches) -> NDArray:
    """The side of every surface: ``sign(g)``, or ``floor(g)`` for integer-valued switches;
    a point on the surface is a side of its own (touching counts as meeting it)."""
    integer = np.array([s.integer for s in switches], dtype=bool)
    out = np.where(integer, np.floor(values), np.sign(values))
    return np.where(_on_surface(values, switches) & integer, out - 0.5, out)


def _rhs_branches(compiled: CompiledForm, z: NDArray, theta: NDArray, t) -> NDArray:
    switching = compiled.switching
    return _branches(switching.rhs_values(z, theta, t), switching.rhs_switches)


def _locate(compiled, traj: Trajectory, theta, interval: int, lo: float, hi: float,
            sample: int, column: int) -> float:
    """Bisect ``[lo, hi]`` on the dense output for the change of one branch."""
    def side(t):
        z = traj.evaluate(t, interval)[sample : sample + 1]
        return _rhs_branches(compiled, z, theta, t)[0, column]

    start = side(lo)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if side(mid) == start:
            lo = mid
        else:
            hi = mid
    return hi


def find_crossings(compiled: CompiledForm, traj: Trajectory, theta: NDArray,
                   times: NDArray) -> list[Crossing]:
    """The first crossing (or touch) of every switch of ``f`` met by the trajectory,
    earliest first."""
    switches = compiled.switching.rhs_switches
    found: dict[int, Crossing] = {}
    for interval, segment in enumerate(traj.segments):
        ts = segment.ts
        inner = [ts[k] + x * (ts[k + 1] - ts[k]) for k in range(segment.steps) for x in _SAMPLES]
        samples = np.sort(np.concatenate([ts, inner]))
        zs = np.stack([traj.evaluate(t, interval) for t in samples])  # (M, B, n)
        M, B, n = zs.shape
        values = compiled.switching.rhs_values(zs.reshape(M * B, n), theta,
                                               np.repeat(samples, B))
        branches = _branches(values, switches).reshape(M, B, len(switches))
        on = _on_surface(values, switches).reshape(M, B, len(switches))
        for column in range(len(switches)):
            if column in found:
                continue
            touching = on[0, :, column]
            if interval == 0 and np.any(touching):
                found[column] = Crossing(float(samples[0]), int(np.argmax(touching)),
                                         switches[column])
                continue
            changed = branches[1:, :, column] != branches[:-1, :, column]  # (M-1, B)
            if not np.any(changed):
                continue
            m, sample = np.argwhere(changed)[0]
            t = _locate(compiled, traj, theta, interval, float(samples[m]),
                        float(samples[m + 1]), int(sample), column)
            found[column] = Crossing(t, int(sample), switches[column])
    return sorted(found.values(), key=lambda c: c.t)


def _scan_options(options: SolverOptions | None) -> SolverOptions:
    if options is not None:
        return options
    return check_solver_options("dopri5", steps=None, rtol=_SCAN_RTOL, atol=_SCAN_ATOL,
                                max_steps=_SCAN_MAX_STEPS)


def _refuse_jump(method: str, crossing: Crossing) -> MethodUnavailable:
    return MethodUnavailable(
        method,
        f"the trajectory crosses {crossing.describe()}: f jumps there, so the gradient "
        "contains a jump term (the saltation matrix I + (f+ - f-) grad g^T / (grad g^T f-)) "
        "that no method here computes, and every number would be silently wrong. Keep the "
        "trajectory off the switch (other z0, theta or times), or write the switch smoothly "
        "(e.g. 1/(1 + exp(-k g)) for Heaviside(g)).",
    )


def _check_observations(method: str, compiled, traj: Trajectory, times: NDArray,
                        data) -> None:
    """Refuse where an observed state lies exactly on a switch of the loss: the loss is not
    differentiable there."""
    switching = compiled.switching
    for i in range(1, len(times)):
        values = switching.loss_values(traj.zs[i], observed(data, i))
        for sample, column in np.argwhere(_on_surface(values, switching.loss_switches)):
            raise MethodUnavailable(
                method,
                f"z(t_{i}) of sample {sample} lies on {switching.loss_switches[column].describe()}"
                " of the loss: the loss is not differentiable there, so no gradient exists. "
                "Move the observation off the switch.",
            )


def _check_time_switches(method: str, crossings: list[Crossing], times: NDArray) -> None:
    """Refuse where ``f`` switches in time exactly at an observation time (or ``t_0``): the
    time gradient has different values from the left and from the right there."""
    for crossing in crossings:
        if crossing.switch.kind == "time" and np.any(times == crossing.t):
            i = int(np.flatnonzero(times == crossing.t)[0])
            raise MethodUnavailable(
                method,
                f"f switches in time exactly at t_{i} = {crossing.t:.6g} "
                f"({crossing.switch.describe()}): dL/dt_{i} has different values from the "
                "left and from the right, so the gradient does not exist there. Move the "
                "observation time off the switch.",
            )


class _BranchRecorder:
    """The compiled form, recording the side of every switch at every evaluation of ``f``
    and of the loss: ``calls`` holds ``(switches, t, branches)`` per evaluation."""

    def __init__(self, compiled):
        self._compiled = compiled
        self.calls: list[tuple[tuple, Any, NDArray]] = []

    def __getattr__(self, name):
        return getattr(self._compiled, name)

    def rhs(self, z, theta, t):
        switches = self._compiled.switching.rhs_switches
        self.calls.append((switches, t, _rhs_branches(self._compiled, z, theta, t)))
        return self._compiled.rhs(z, theta, t)

    def kernel(self, theta):
        """The compiled kernel (what the solvers' inner loops call), recording too."""
        return _RecordingKernel(self._compiled.kernel(theta), self, theta)

    def loss(self, z, y=None):
        switches = self._compiled.switching.loss_switches
        values = self._compiled.switching.loss_values(z, y)
        self.calls.append((switches, None, _branches(values, switches)))
        return self._compiled.loss(z, y)


class _RecordingKernel:
    """A kernel whose ``rhs`` records the switch sides, as :class:`_BranchRecorder` does."""

    def __init__(self, inner, recorder: _BranchRecorder, theta):
        self._inner, self._recorder, self._theta = inner, recorder, theta

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def rhs(self, z, t):
        compiled = self._recorder._compiled
        self._recorder.calls.append((compiled.switching.rhs_switches, t,
                                     _rhs_branches(compiled, z, self._theta, t)))
        return self._inner.rhs(z, t)


def _signature(compiled, z0, theta, times, grid, tableau, data) -> list:
    """The side of every switch at every stage and observation of the discrete solution."""
    recorder = _BranchRecorder(compiled)
    replay(recorder, z0, theta, times, grid, tableau, data=data)
    return recorder.calls


def _first_change(base: list, other: list) -> str | None:
    """Which switch, where, changes sides between two signatures (None: none does)."""
    if len(base) != len(other):
        return "a switch"
    for (switches, t, before), (_, _, after) in zip(base, other, strict=True):
        changed = np.argwhere(before != after)
        if changed.size:
            where = "an observation" if t is None else f"a stage at t = {float(np.real(t)):.6g}"
            return f"{switches[changed[0][-1]].describe()} ({where})"
    return None


def _guard_differences(compiled, z0, theta, times, traj, options, data) -> None:
    """Refuse finite differences whose perturbations move the discrete solution across a
    switch or kink (MATH.md: a difference quotient that straddles one is wrong)."""
    grid = (FrozenGrid(tuple(traj.grid())) if options.tableau.adaptive
            else FrozenGrid.uniform(len(times) - 1, options.steps))

    def signature(z=z0, th=theta, ts=times):
        return _signature(compiled, z, th, ts, grid, options.tableau, data)

    base = signature()
    min_gap = float(np.min(np.diff(times)))
    moves = [(f"z0[:, {j}]", "z", z0, (slice(None), j)) for j in range(z0.shape[1])]
    moves += [(f"theta[{j}]", "th", theta, j) for j in range(theta.shape[0])]
    moves += [(f"times[{j}]", "ts", times, j) for j in range(times.shape[0])]
    for what, key, array, index in moves:
        radius = GUARD_RADIUS * np.maximum(1.0, np.abs(array[index]))
        if key == "ts":
            radius = min(float(radius), 0.1 * min_gap)
        for sign in (1.0, -1.0):
            moved = array.copy()
            moved[index] += sign * radius
            crossed = _first_change(base, signature(**{key: moved}))
            if crossed is not None:
                raise MethodUnavailable(
                    "finite_difference",
                    f"moving {what} by {sign * float(np.max(radius)):+.1e} moves the discrete "
                    f"solution across {crossed}, so a difference quotient would straddle it "
                    "and be wrong; use 'discrete_adjoint'.",
                )


def check_switches(compiled: CompiledForm, z0: NDArray, theta: NDArray, times: NDArray,
                   method: str, options: SolverOptions | None, data=None) -> tuple[str, ...]:
    """Find where the solution meets the switches of ``f`` and the loss; refuse where the
    gradient does not exist or no method computes it; describe the rest.

    Returns
    -------
    notes : tuple of str
        Per kink or switch in time the trajectory meets, where and when (e.g. "the trajectory
        meets the kink of Abs(z) (where z = 0) at t = 0.693147 (sample 0)"); empty for smooth
        problems, which cost nothing here.

    Raises
    ------
    MethodUnavailable
        A jump of ``f`` is crossed; an observed state lies on a switch of the loss; ``f``
        switches in time at an observation time; or (finite differences) a perturbation
        moves the discrete solution across a switch.
    """
    switching = getattr(compiled, "switching", None)
    if not switching:
        return ()
    scan = _scan_options(options if method not in ("exact", "high_precision") else None)
    traj = solve_trajectory(compiled, z0, theta, times, scan)
    crossings = find_crossings(compiled, traj, theta, times) if switching.rhs_switches else []
    for crossing in crossings:
        if crossing.switch.kind == "jump":
            raise _refuse_jump(method, crossing)
    _check_time_switches(method, crossings, times)
    _check_observations(method, compiled, traj, times, data)
    if method == "finite_difference":
        _guard_differences(compiled, z0, theta, times, traj, scan, data)
    return tuple(f"the trajectory meets {c.describe()}" for c in crossings)
