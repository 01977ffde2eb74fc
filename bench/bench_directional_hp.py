"""Time of the double-double directional reference at network size.

Problem P2 of ``bench_gradient.py``: ``f = W2 tanh(W1 z + b1) + b2``, n = 16, width 64
(2,128 parameters), B = 256, observation times 0, 1/3, 2/3, 1, loss ½|z|² summed over the
batch and the times; a random direction in (z0, theta, times). For each number of digits
asked it prints the value, the error estimate, the cost (macro steps, right-hand sides of
the whole batch, both solves) and the wall and CPU time of the call, and checks the value
against the float64 interpolated adjoint at rtol 1e-12 dotted with the direction (they must
agree to that solver's accuracy, about 1e-10 relative). One thread; the machine may be
shared, so CPU time is the figure to compare. Run::

    python bench/bench_directional_hp.py [--batch 256] [--digits 30 25 20 16]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

from numeric import gradient  # noqa: E402
from numeric._directional_hp import high_precision_directional  # noqa: E402
from symbolic import Dynamics, compile_problem  # noqa: E402

#: The float64 cross-check: interpolated adjoint at rtol 1e-12 is good to about 1e-10.
FLOAT64_AGREEMENT = 1e-9


def p2(batch: int, seed: int = 0):
    """The P2 network with the weights of ``bench_gradient.mlp_case``'s distribution."""
    n, width = 16, 64
    rng = np.random.default_rng(seed)
    W1 = rng.standard_normal((width, n)) / np.sqrt(n)
    b1 = 0.1 * rng.standard_normal(width)
    W2 = rng.standard_normal((n, width)) / np.sqrt(width)
    b2 = 0.1 * rng.standard_normal(n)
    z0 = rng.standard_normal((batch, n))
    z = sp.MatrixSymbol("z", n, 1)
    S1, s1 = sp.MatrixSymbol("W1", width, n), sp.MatrixSymbol("b1", width, 1)
    S2, s2 = sp.MatrixSymbol("W2", n, width), sp.MatrixSymbol("b2", n, 1)
    dynamics = Dynamics(rhs=S2 * (S1 * z + s1).applyfunc(sp.tanh) + s2, state=z,
                        params=[S1, s1, S2, s2])
    loss = (z.T * z)[0, 0] / 2
    theta = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    times = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    direction = (rng.standard_normal(z0.shape), rng.standard_normal(theta.size),
                 rng.standard_normal(times.size))
    return dynamics, loss, z0, theta, times, direction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--digits", type=int, nargs="+", default=[30, 25, 20, 16])
    args = parser.parse_args()
    dynamics, loss, z0, theta, times, (v_z0, v_theta, v_times) = p2(args.batch)
    compiled = compile_problem(dynamics, loss)
    start = time.process_time()
    g = gradient(dynamics, z0, theta, times, loss=loss, method="interpolated_adjoint",
                 rtol=1e-12, atol=1e-14)
    float64 = float(np.sum(g.z0 * v_z0) + g.theta @ v_theta + g.times @ v_times)
    print(f"P2, B = {args.batch}, p = {theta.size}: float64 interpolated adjoint (rtol 1e-12) "
          f"v^T g = {float64:.16e}  ({time.process_time() - start:.2f} s CPU)")
    for digits in args.digits:
        wall, cpu = time.perf_counter(), time.process_time()
        (hi, _lo), estimate, info = high_precision_directional(
            compiled, None, z0, theta, times, v_z0, v_theta, v_times, digits=digits)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        agreement = abs(hi - float64) / abs(hi)
        print(f"digits {digits}: v^T g = {info['decimal']}  estimate {estimate:.1e}  "
              f"macro steps {info['macro_steps']} (+{info['rejected_steps']} rejected)  "
              f"rhs {info['nfev']}  max order {info['max_order']}  "
              f"wall {wall:.1f} s  CPU {cpu:.1f} s  |float64 - dd| / |dd| {agreement:.1e}")
        if not agreement <= FLOAT64_AGREEMENT:
            raise SystemExit(f"the double-double value disagrees with float64 by {agreement:.1e}")


if __name__ == "__main__":
    main()
