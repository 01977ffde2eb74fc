"""Benchmark the compiled batch callables against hand-written NumPy, for a tanh layer.

For :math:`f(z, \\theta) = \\tanh(W z + b)` with ``theta = [W.ravel(), b]`` (``p = n*n + n``,
row-major ``W`` first) and ``a`` an adjoint, the NumPy reference follows the equations

.. math:: y = \\tanh(W z + b), \\qquad
          (\\partial f/\\partial z)^T a = W^T \\big((1 - y^2) \\odot a\\big), \\qquad
          (\\partial f/\\partial \\theta)^T a =
          \\big[\\operatorname{vec}(g z^T),\\ g\\big],\\quad g = (1 - y^2) \\odot a

sample by sample (batch first, ``z`` and ``a`` of shape ``(B, n)``). Before timing, the
compiled results are checked against these to ``1e-12`` relative, so both sides do the
same work. Run::

    python bench/bench_rhs.py [--batch 1024] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import sympy as sp
from numpy.typing import NDArray

from symbolic import Dynamics, compile_problem

SIZES = (3, 8, 16)
#: Compiled and NumPy results must agree to this, relative to the largest entry: both are
#: the same formulas, rounded in a different order.
ROUNDING = 1e-12
#: Wall time one ``repeat`` of a measurement aims for; the best of ``--repeat`` is kept.
TARGET_SECONDS = 0.05
#: glibc ``mallopt`` parameters, and the size below which freed memory stays in the heap.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
HEAP_KEEP_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Inputs:
    """One batch of inputs: ``z``, ``a`` ``(B, n)``, ``W`` ``(n, n)``, ``b`` ``(n,)``."""

    z: NDArray
    a: NDArray
    W: NDArray
    b: NDArray
    t: float = 0.0

    @property
    def theta(self) -> NDArray:
        """``(p,)``: ``W`` row-major, then ``b`` (the order of the Dynamics' params)."""
        return np.concatenate([self.W.reshape(-1), self.b])


def tanh_layer(n: int) -> tuple[Dynamics, sp.Expr]:
    """The dynamics ``tanh(W z + b)`` and the loss of the built-in ``tanh`` problem, size ``n``."""
    z = sp.symbols(f"z0:{n}")
    W = sp.Matrix(n, n, sp.symbols(f"w0:{n * n}"))
    b = sp.Matrix(sp.symbols(f"b0:{n}"))
    rhs = (W * sp.Matrix(z) + b).applyfunc(sp.tanh)
    loss = sp.Rational(1, 2) * sum((zi - 0.5) ** 2 for zi in z)
    return Dynamics(rhs=rhs, state=z, params=[*W, *b]), loss


def random_inputs(n: int, batch: int, seed: int = 7) -> Inputs:
    rng = np.random.default_rng(seed)
    return Inputs(
        z=rng.uniform(-1, 1, (batch, n)),
        a=rng.standard_normal((batch, n)),
        W=0.8 * rng.standard_normal((n, n)) / np.sqrt(n),
        b=0.3 * rng.standard_normal(n),
    )


# -- the NumPy reference, term by term --------------------------------------------------
def numpy_rhs(z: NDArray, W: NDArray, b: NDArray) -> NDArray:
    """``tanh(W z + b)`` per sample, shape ``(B, n)``."""
    return np.tanh(z @ W.T + b)


def numpy_vjp_state(z: NDArray, W: NDArray, b: NDArray, a: NDArray) -> NDArray:
    """``W^T ((1 - y^2) a)`` per sample, shape ``(B, n)``."""
    y = np.tanh(z @ W.T + b)
    return ((1 - y**2) * a) @ W


def numpy_vjp_params(z: NDArray, W: NDArray, b: NDArray, a: NDArray) -> NDArray:
    """``[vec(g z^T), g]`` per sample with ``g = (1 - y^2) a``, shape ``(B, n*n + n)``."""
    y = np.tanh(z @ W.T + b)
    g = (1 - y**2) * a
    grad_W = g[:, :, None] * z[:, None, :]  # (B, n, n): d f_i / d W_ij = g_i z_j
    return np.concatenate([grad_W.reshape(z.shape[0], -1), g], axis=1)


# -- measurement --------------------------------------------------------------------------
def best_times(calls: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Best seconds per call of each of ``calls``, over ``repeat`` interleaved repeats.

    Each repeat runs every call for about ``TARGET_SECONDS`` in turn, so a burst of load
    from other processes slows all of them alike instead of one side of the ratio.
    """
    timers = [timeit.Timer(call) for call in calls]
    numbers = []
    for call, timer in zip(calls, timers, strict=True):
        call()  # warm up
        single = min(timer.repeat(repeat=3, number=1))
        numbers.append(max(1, int(TARGET_SECONDS / max(single, 1e-9))))
    best = [float("inf")] * len(calls)
    for _ in range(repeat):
        for i, (timer, number) in enumerate(zip(timers, numbers, strict=True)):
            best[i] = min(best[i], timer.timeit(number=number) / number)
    return best


def check_equal(name: str, n: int, compiled: NDArray, reference: NDArray) -> None:
    if compiled.shape != reference.shape:
        raise AssertionError(
            f"n={n} {name}: compiled shape {compiled.shape} != NumPy shape {reference.shape}"
        )
    scale = float(np.max(np.abs(reference)))
    np.testing.assert_allclose(
        compiled, reference, rtol=ROUNDING, atol=ROUNDING * scale,
        err_msg=f"n={n} {name}: compiled and NumPy disagree",
    )


def keep_freed_memory() -> str:
    """Stop glibc returning freed blocks to the OS between calls, if this is glibc.

    The ``(B, p)`` results are a few hundred kB: depending on the allocation history glibc
    either reuses them from its heap or maps and unmaps fresh pages on every call, whose
    page faults then cost more than the arithmetic (both sides, but run-dependently: the
    same row measured 190 µs or 620 µs in consecutive runs). Pinning the thresholds makes
    the measurement the arithmetic. Nothing outside this process is changed.
    """
    if not sys.platform.startswith("linux"):
        return "malloc defaults (not Linux)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        pinned = all(libc.mallopt(param, HEAP_KEEP_BYTES) == 1
                     for param in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD))
    except (OSError, AttributeError):
        pinned = False
    if not pinned:
        return "malloc defaults (mallopt unavailable)"
    return f"glibc trim/mmap thresholds pinned at {HEAP_KEEP_BYTES // 2**20} MiB"


def blas_description() -> str:
    """Which BLAS numpy calls, and its kernel (core type) if threadpoolctl can say."""
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    env = f"OPENBLAS_CORETYPE={coretype}" if coretype else "OPENBLAS_CORETYPE unset"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return (
            f"{config.get('name')} {config.get('version')} (from np.show_config; install "
            f"threadpoolctl for the runtime kernel); {env}"
        )
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    described = ", ".join(
        f"{p.get('internal_api')} {p.get('version')} kernel={p.get('architecture')} "
        f"threads={p.get('num_threads')}"
        for p in pools
    )
    return f"{described or 'no BLAS pool found'}; {env}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024, help="batch size B (default 1024)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timing repeats, the best is kept (default 5)")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="keep glibc's malloc thresholds (timings then depend on page "
                        "faults for results of a few hundred kB)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeat < 1:
        parser.error(f"--batch and --repeat must be positive, got {args.batch}, {args.repeat}")

    allocator = "malloc defaults" if args.malloc_defaults else keep_freed_memory()
    print(f"numpy {np.__version__}, sympy {sp.__version__}; BLAS: {blas_description()}")
    print(f"B = {args.batch}, best of {args.repeat} repeats; {allocator}\n")

    compile_times: dict[int, float] = {}
    rows: list[tuple[int, str, float, float]] = []
    for n in SIZES:
        dyn, loss = tanh_layer(n)
        start = time.perf_counter()
        compiled = compile_problem(dyn, loss)
        compile_times[n] = time.perf_counter() - start

        x = random_inputs(n, args.batch)
        theta = x.theta
        cases = {
            "rhs": (partial(compiled.rhs, x.z, theta, x.t),
                    partial(numpy_rhs, x.z, x.W, x.b)),
            "vjp_state": (partial(compiled.vjp_state, x.z, theta, x.t, x.a),
                          partial(numpy_vjp_state, x.z, x.W, x.b, x.a)),
            "vjp_params": (partial(compiled.vjp_params, x.z, theta, x.t, x.a),
                           partial(numpy_vjp_params, x.z, x.W, x.b, x.a)),
        }
        for name, (compiled_call, numpy_call) in cases.items():
            check_equal(name, n, compiled_call(), numpy_call())
            rows.append((n, name, *best_times([compiled_call, numpy_call], args.repeat)))

    print(f"{'n':>3}  {'function':<10}  {'compiled (µs)':>13}  {'numpy (µs)':>10}  "
          f"{'compiled/numpy':>14}")
    for n, name, t_compiled, t_numpy in rows:
        print(f"{n:>3}  {name:<10}  {1e6 * t_compiled:>13.1f}  {1e6 * t_numpy:>10.1f}  "
              f"{t_compiled / t_numpy:>14.2f}")
    print("\ncompile time (first compile_problem call):")
    for n, seconds in compile_times.items():
        print(f"  n = {n:>2}: p = {n * n + n:>3}, {seconds:.2f} s")


if __name__ == "__main__":
    main()
