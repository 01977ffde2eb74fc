"""Gradient speed at network size: adjoint-verify against hand-written NumPy (and diffrax,
torchdiffeq where installed), one thread, ratios measured in the same run.

Problems (t in [0, 1], loss ½|z(1)|² summed over the batch, classical RK4 with 100 steps,
float64):

- P1: ``f = W z``, n = 4, B = 256, in elementwise form (n² scalar expressions) and matrix
  form;
- P2: ``f = W2 tanh(W1 z + b1) + b2``, n = 16, width 64, B = 256;
- P3: the same with n = 64, width 256, B = 1024.

For each it prints: derivation + compilation time; the largest relative deviation of our
gradient from the hand-written reverse sweep (``bench/_hand.py``; must be <= 1e-12); the
median over interleaved repeats of (our time / hand time) and, where installed, (diffrax
time / hand time) and (torchdiffeq time / hand time); the peak memory of one gradient
(tracemalloc); for P2 and P3 the compiled ``f`` and VJP against hand NumPy and the
interpolated adjoint (dopri5, rtol 1e-7) against one forward solve. The machine is shared:
ratios of interleaved runs, medians, never single times; times are CPU times of this process (all
its threads, XLA's included), which a busy machine disturbs less than wall time. Run::

    python bench/bench_gradient.py [--repeat 9] [--skip-p3]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hand import linear_rk4_gradient, mlp_rk4_gradient  # noqa: E402
from _peers import diffrax_gradient_fn, torchdiffeq_gradient_fn  # noqa: E402

from numeric import gradient, solve  # noqa: E402
from symbolic import Dynamics, compile_problem  # noqa: E402
from symbolic._buffers import POOL  # noqa: E402
from symbolic._compile import _compile_cached  # noqa: E402

#: Our gradient must equal the hand-written reverse sweep of the same formulas to this.
ROUNDING = 1e-12
STEPS = 100
TIMES = np.array([0.0, 1.0])


@dataclass
class Case:
    name: str
    build: Callable[[], tuple[Dynamics, sp.Expr]]
    theta: np.ndarray
    z0: np.ndarray
    hand: Callable[[], tuple]
    hand_flat: Callable[[tuple], np.ndarray]
    mlp: tuple | None = None  # (W1, b1, W2, b2) for the peers and the kernel timings


def linear_cases(rng) -> list[Case]:
    n, B = 4, 256
    W = rng.standard_normal((n, n)) / 2
    z0 = rng.standard_normal((B, n))

    def elementwise():
        z = sp.symbols(f"z0:{n}")
        Wm = sp.Matrix(n, n, sp.symbols(f"w0:{n * n}"))
        return (Dynamics(rhs=Wm * sp.Matrix(z), state=z, params=Wm),
                sp.Rational(1, 2) * sum(x**2 for x in z))

    def matrix():
        z, Ws = sp.MatrixSymbol("z", n, 1), sp.MatrixSymbol("W", n, n)
        return Dynamics(rhs=Ws * z, state=z, params=[Ws]), (z.T * z)[0, 0] / 2

    def hand():
        return linear_rk4_gradient(W, z0, STEPS)

    return [Case(f"P1 f = W z ({form})", build, W.ravel(), z0, hand,
                 lambda out: out[2].ravel()) for form, build in (("elementwise", elementwise),
                                                                 ("matrix", matrix))]


def mlp_case(rng, label: str, n: int, width: int, B: int) -> Case:
    W1 = rng.standard_normal((width, n)) / np.sqrt(n)
    b1 = 0.1 * rng.standard_normal(width)
    W2 = rng.standard_normal((n, width)) / np.sqrt(width)
    b2 = 0.1 * rng.standard_normal(n)
    z0 = rng.standard_normal((B, n))

    def build():
        z = sp.MatrixSymbol("z", n, 1)
        S1, s1 = sp.MatrixSymbol("W1", width, n), sp.MatrixSymbol("b1", width, 1)
        S2, s2 = sp.MatrixSymbol("W2", n, width), sp.MatrixSymbol("b2", n, 1)
        rhs = S2 * (S1 * z + s1).applyfunc(sp.tanh) + s2
        return Dynamics(rhs=rhs, state=z, params=[S1, s1, S2, s2]), (z.T * z)[0, 0] / 2

    theta = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    return Case(f"{label} W2 tanh(W1 z + b1) + b2, n={n}, width={width}, B={B}", build, theta,
                z0, lambda: mlp_rk4_gradient(W1, b1, W2, b2, z0, STEPS),
                lambda out: np.concatenate([x.ravel() for x in out[2]]), (W1, b1, W2, b2))


def interleaved(reference: Callable, other: Callable, repeat: int) -> tuple[float, float]:
    """Median of other/reference over interleaved runs, and the median reference time."""
    ratios, times = [], []
    for _ in range(repeat):
        start = time.process_time()
        reference()
        t_ref = time.process_time() - start
        start = time.process_time()
        other()
        ratios.append((time.process_time() - start) / t_ref)
        times.append(t_ref)
    return float(np.median(ratios)), float(np.median(times))


def peak_memory(fn: Callable) -> float:
    """Peak MiB allocated during one call, with the scratch pool emptied first (so buffers it
    would reuse count)."""
    POOL.clear()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def run_case(case: Case, repeat: int) -> None:
    print(f"\n{case.name}")
    _compile_cached.cache_clear()
    start = time.process_time()
    dyn, loss = case.build()
    compile_problem(dyn, loss)
    print(f"  derivation + compilation       {time.process_time() - start:8.3f} s")

    def ours():
        return gradient(dyn, case.z0, case.theta, TIMES, loss=loss, method="discrete_adjoint",
                        solver="rk4", steps=STEPS)

    g, hand = ours(), case.hand()
    deviation = max(np.max(np.abs(g.z0 - hand[1])) / np.max(np.abs(hand[1])),
                    np.max(np.abs(g.theta - case.hand_flat(hand)))
                    / np.max(np.abs(case.hand_flat(hand))))
    verdict = "ok" if deviation <= ROUNDING else "EXCEEDS 1e-12"
    print(f"  gradient vs hand NumPy         {deviation:8.1e} (relative, {verdict})")
    ratio, t_hand = interleaved(case.hand, ours, repeat)
    print(f"  hand NumPy RK4 gradient        {t_hand * 1e3:8.1f} ms")
    print(f"  adjoint-verify / hand NumPy    {ratio:8.2f}   (peak memory "
          f"{peak_memory(ours):.0f} MiB; hand {peak_memory(case.hand):.0f} MiB)")
    peers = {}
    if case.mlp is not None:
        for label, make in (("diffrax", diffrax_gradient_fn),
                            ("torchdiffeq", torchdiffeq_gradient_fn)):
            fn = make(*case.mlp, case.z0, STEPS)
            if fn is None:
                print(f"  {label:<13} not installed")
                continue
            peer_ratio, _ = interleaved(case.hand, fn, repeat)
            peers[label] = peer_ratio
            print(f"  {label + ' / hand NumPy':<30} {peer_ratio:8.2f}   "
                  f"(adjoint-verify / {label}: {ratio / peer_ratio:.2f})")
        kernel_ratios(dyn, loss, case, repeat)
        interpolated_vs_forward(dyn, loss, case, repeat)


def kernel_ratios(dyn, loss, case: Case, repeat: int) -> None:
    """The compiled f and its VJPs against the same formulas written by hand."""
    W1, b1, W2, b2 = case.mlp
    z = case.z0
    a = np.random.default_rng(1).standard_normal(z.shape)
    kernel = compile_problem(dyn, loss).kernel(case.theta)

    def hand_f():
        return np.tanh(z @ W1.T + b1) @ W2.T + b2

    def hand_vjp():
        H = np.tanh(z @ W1.T + b1)
        U = (a @ W2) * (1 - H * H)
        return U @ W1, (U.T @ z, U.sum(0), a.T @ H, a.sum(0))

    ratio_f, _ = interleaved(hand_f, lambda: kernel.rhs(z, 0.0), repeat * 5)
    ratio_vjp, _ = interleaved(hand_vjp, lambda: kernel.vjp(z, 0.0, a), repeat * 5)
    print(f"  compiled f / hand              {ratio_f:8.2f}")
    print(f"  compiled VJP (z and theta) / hand {ratio_vjp:5.2f}")


def interpolated_vs_forward(dyn, loss, case: Case, repeat: int) -> None:
    options = {"solver": "dopri5", "rtol": 1e-7, "atol": 1e-9}

    def forward():
        return solve(dyn, case.z0, case.theta, TIMES, **options)

    def adjoint():
        return gradient(dyn, case.z0, case.theta, TIMES, loss=loss,
                        method="interpolated_adjoint", **options)

    ratio, _ = interleaved(forward, adjoint, max(3, repeat // 2))
    print(f"  interpolated adjoint / forward solve (dopri5, rtol 1e-7) {ratio:5.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--skip-p3", action="store_true", help="leave out the largest problem")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    cases = [*linear_cases(rng), mlp_case(rng, "P2", 16, 64, 256)]
    if not args.skip_p3:
        cases.append(mlp_case(rng, "P3", 64, 256, 1024))
    print(f"one thread; ratios are medians of {args.repeat} interleaved runs")
    for case in cases:
        run_case(case, args.repeat if not case.name.startswith("P3") else max(3, args.repeat
                                                                                // 3))


if __name__ == "__main__":
    main()
