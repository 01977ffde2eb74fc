"""Gradient implementations for the suite tests, loaded by workers as FILE:FUNCTION.

``grad`` serves any problem of a suite through the ``problem`` keyword, with the library's
own interpolated adjoint at tight tolerances; ``flipped`` is its negative, the bug
check-suite must catch on every problem.
"""

from numeric import gradient


def grad(z0, theta, times, problem):
    g = gradient(problem.dynamics, z0, theta, times, loss=problem.loss,
                 method="interpolated_adjoint", rtol=1e-11, atol=1e-13,
                 targets=problem.targets, data=problem.data)
    return g.z0, g.theta, g.times


def flipped(z0, theta, times, problem):
    dz0, dtheta, dtimes = grad(z0, theta, times, problem)
    return -dz0, -dtheta, -dtimes
