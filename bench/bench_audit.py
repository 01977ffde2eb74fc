"""Audits at network size: the P2 network of ``bench_gradient.py`` (``W2 tanh(W1 z + b1) +
b2``, 16 -> 64 -> 16, 2,128 parameters), a batch of 256 and 3 observation times.

Times (wall clock, this machine) and verdicts of:

- ``audit_gradient`` of a correct gradient (backpropagation through RK4 with 200 steps per
  interval: an implementation independent of the reference) at ``rtol=1e-6``: must pass;
- ``audit_gradient`` of five wrong gradients: the sign of ``b1`` flipped; ``W2``'s gradient
  divided by the batch size; the parameter blocks concatenated as ``W2, b2, W1, b1``; one
  entry of ``W1`` off by 1e-4 relative; every observation-time gradient zero. Each must fail
  with a diagnosis that names what is wrong;
- ``audit`` (every applicable method).

Run::

    python bench/bench_audit.py [--skip-audit]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time

import numpy as np
import sympy as sp

from numeric import gradient
from symbolic import Dynamics
from verification import audit, audit_gradient

N_STATE, WIDTH, BATCH = 16, 64, 256
TIMES = np.array([0.0, 1 / 3, 2 / 3, 1.0])


def network():
    z = sp.MatrixSymbol("z", N_STATE, 1)
    W1, b1 = sp.MatrixSymbol("W1", WIDTH, N_STATE), sp.MatrixSymbol("b1", WIDTH, 1)
    W2, b2 = sp.MatrixSymbol("W2", N_STATE, WIDTH), sp.MatrixSymbol("b2", N_STATE, 1)
    dyn = Dynamics(rhs=W2 * (W1 * z + b1).applyfunc(sp.tanh) + b2, state=z,
                   params=[W1, b1, W2, b2])
    return dyn, (z.T * z)[0, 0] / 2


def blocks(dyn):
    """Slices of theta by parameter matrix."""
    out, start = {}, 0
    for name, shape in dyn.param_shapes.items():
        size = int(np.prod(shape)) if shape else 1
        out[name] = slice(start, start + size)
        start += size
    return out


def implementations(dyn, loss):
    def correct(z0, theta, times):
        g = gradient(dyn, z0, theta, times, loss=loss, method="discrete_adjoint",
                     solver="rk4", steps=200)
        return g.z0, g.theta, g.times

    part = blocks(dyn)

    def sign_of_b1(z0, theta, times):
        dz, dth, dt = correct(z0, theta, times)
        dth = dth.copy()
        dth[part["b1"]] *= -1
        return dz, dth, dt

    def w2_mean(z0, theta, times):
        dz, dth, dt = correct(z0, theta, times)
        dth = dth.copy()
        dth[part["W2"]] /= z0.shape[0]
        return dz, dth, dt

    def reordered(z0, theta, times):
        dz, dth, dt = correct(z0, theta, times)
        order = ("W2", "b2", "W1", "b1")
        return dz, np.concatenate([dth[part[k]] for k in order]), dt

    def one_entry(z0, theta, times):
        dz, dth, dt = correct(z0, theta, times)
        dth = dth.copy()
        k = part["W1"].start + 37
        dth[k] *= 1 + 1e-4
        return dz, dth, dt

    def times_zero(z0, theta, times):
        dz, dth, dt = correct(z0, theta, times)
        return dz, dth, np.zeros_like(dt)

    return {"correct": correct, "sign of b1 flipped": sign_of_b1,
            "W2 divided by B": w2_mean, "blocks as W2, b2, W1, b1": reordered,
            "one W1 entry off by 1e-4": one_entry, "observation times zero": times_zero}


def inputs(dyn, seed: int = 0):
    rng = np.random.default_rng(seed)
    scale = {"W1": 1 / np.sqrt(N_STATE), "b1": 0.1, "W2": 1 / np.sqrt(WIDTH), "b2": 0.1}
    theta = np.concatenate([scale[name] * rng.standard_normal(int(np.prod(shape)))
                            for name, shape in dyn.param_shapes.items()])
    return rng.standard_normal((BATCH, N_STATE)), theta


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-audit", action="store_true", help="audit_gradient only")
    args = parser.parse_args(argv)
    dyn, loss = network()
    z0, theta = inputs(dyn)
    print(f"P2: n={dyn.n}, width {WIDTH}, p={dyn.p}, B={BATCH}, {len(TIMES) - 1} "
          "observation times")
    for label, fn in implementations(dyn, loss).items():
        start = time.perf_counter()
        report = audit_gradient(dyn, fn, z0, theta, TIMES, loss=loss, rtol=1e-6, name=label)
        seconds = time.perf_counter() - start
        verdict = "PASS" if report.passed else "FAIL"
        print(f"\naudit_gradient, {label}: {verdict} in {seconds:.1f} s")
        for row in report.failures:
            print(f"  {row.block}: {row.diagnosis}")
        if label == "correct":
            for note in report.problems[0].notes:
                print(f"  {note}")
    if not args.skip_audit:
        start = time.perf_counter()
        report = audit(dyn, z0, theta, TIMES, loss=loss, name="P2")
        print(f"\naudit (every applicable method): {'PASS' if report.passed else 'FAIL'} "
              f"in {time.perf_counter() - start:.1f} s")
        print(report)


if __name__ == "__main__":
    main()
