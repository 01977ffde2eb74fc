"""What a method may cost before it refuses and names the method to use instead.

Forward sensitivity carries ``n (n + p)`` extra unknowns per sample, and complex step and
finite differences replay the whole solve once per input entry: fine for a physical model
with a handful of parameters, hours and gigabytes for a network with thousands. Such a
method refuses with :class:`numeric.MethodUnavailable` instead of starting, and says which
method serves the problem.
"""

from __future__ import annotations

from ._errors import MethodUnavailable

__all__ = ["MEMORY_BUDGET", "PER_ENTRY_BUDGET", "check_memory", "check_per_entry"]

#: Bytes a method's working arrays may take (the integrator's stages included).
MEMORY_BUDGET = 512 * 2**20
#: Row evaluations of the right-hand side (replays x stages x batch rows) that the
#: per-entry methods may spend: about a minute for a small network.
PER_ENTRY_BUDGET = 2 * 10**7


def check_memory(method: str, needed: float, what: str, alternative: str) -> None:
    """Refuse ``method`` when ``needed`` bytes exceed :data:`MEMORY_BUDGET`."""
    if needed > MEMORY_BUDGET:
        raise MethodUnavailable(
            method,
            f"{what} would take about {needed / 2**30:.2f} GiB, above the memory budget of "
            f"{MEMORY_BUDGET / 2**30:.2f} GiB; use {alternative}.",
        )


def check_per_entry(method: str, directions: int, replays_each: int, stage_evaluations: int,
                    batch: int) -> None:
    """Refuse a per-entry method whose replays would exceed :data:`PER_ENTRY_BUDGET`."""
    work = directions * replays_each * stage_evaluations * batch
    if work > PER_ENTRY_BUDGET:
        raise MethodUnavailable(
            method,
            f"it replays the solve {replays_each} times for each of the {directions} input "
            f"entries ({work:.1e} right-hand-side row evaluations, above the budget of "
            f"{PER_ENTRY_BUDGET:.0e}); use 'discrete_adjoint' for the exact derivative of "
            "the solver, or an audit, which checks large problems along random directions.",
        )
