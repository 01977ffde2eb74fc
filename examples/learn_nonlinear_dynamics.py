"""Learn nonlinear dynamics with a tanh layer f = A tanh(B z + b), gradients audited.

The data are trajectories of a damped nonlinear oscillator (a pendulum with friction,
x' = v, v' = -sin(x) - 0.3 v) from several initial states. The model is the Neural ODE
f = A tanh(B z + b) with a hidden layer of `--hidden` units, trained by L-BFGS on
sum_{b,i} |z_b(t_i) - y_b(t_i)|^2 / 2 with the gradient of the method you pick. Every k-th
evaluation the gradient in use is audited against a reference (forward sensitivity at
rtol 1e-13, or high precision when the system is small); a failed audit stops the run.
At the end the trained model's trajectories are compared with the data.

    python examples/learn_nonlinear_dynamics.py
    python examples/learn_nonlinear_dynamics.py --method quadrature_adjoint --hidden 6
    python examples/learn_nonlinear_dynamics.py --plot fit.png        # needs matplotlib
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import sympy as sp
from _audited_training import Training, plot_loss, print_history, train_audited

from numeric import solve
from symbolic import Dynamics
from verification import solver_tolerance

Z = sp.symbols("x v")
Y = sp.symbols("y_x y_v")
LOSS = sp.Rational(1, 2) * sum((z - y) ** 2 for z, y in zip(Z, Y, strict=True))
FRICTION = 0.3
PENDULUM = Dynamics(rhs=[Z[1], -sp.sin(Z[0]) - FRICTION * Z[1]], state=Z)


def tanh_model(hidden: int) -> Dynamics:
    A = sp.Matrix(2, hidden, sp.symbols(f"a0:{2 * hidden}"))
    B = sp.Matrix(hidden, 2, sp.symbols(f"b0:{2 * hidden}"))
    bias = sp.Matrix(sp.symbols(f"c0:{hidden}"))
    rhs = A * (B * sp.Matrix(Z) + bias).applyfunc(sp.tanh)
    return Dynamics(rhs=rhs, state=Z, params=[*A, *B, *bias])


@dataclass
class Setup:
    model: Dynamics
    theta_start: np.ndarray
    z0: np.ndarray
    times: np.ndarray
    data: np.ndarray
    method: str
    rtol: float


def make_setup(*, hidden: int = 8, method: str = "interpolated_adjoint", observations: int = 20,
               span: float = 6.0, seed: int = 1, rtol: float = 1e-8) -> Setup:
    rng = np.random.default_rng(seed)
    z0 = np.array([[1.5, 0.0], [-1.0, 1.0], [0.5, -1.5]])
    times = np.linspace(0.0, span, observations + 1)
    data = solve(PENDULUM, z0, [], times, rtol=1e-12, atol=1e-14)[1:]
    model = tanh_model(hidden)
    theta = 0.5 * rng.standard_normal(model.p)
    return Setup(model, theta, z0, times, data, method, rtol)


def trajectories(setup: Setup, theta: np.ndarray) -> np.ndarray:
    return solve(setup.model, setup.z0, theta, setup.times, rtol=1e-10, atol=1e-12)[1:]


def train(setup: Setup, *, iterations: int = 200, audit_every: int = 25) -> Training:
    return train_audited(setup.model, LOSS, Y, setup.z0, setup.times, setup.data,
                         setup.theta_start, method=setup.method,
                         options={"rtol": setup.rtol, "atol": setup.rtol / 100},
                         audit_rtol=solver_tolerance(setup.rtol, setup.rtol / 100),
                         audit_every=audit_every, iterations=iterations)


def fit_error(setup: Setup, result: Training) -> float:
    """Largest distance between the trained model's trajectories and the data, relative to
    the largest data value."""
    model = trajectories(setup, result.theta)
    return float(np.max(np.abs(model - setup.data)) / np.max(np.abs(setup.data)))


def plot_fit(setup: Setup, result: Training, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = np.linspace(setup.times[0], setup.times[-1], 200)
    model = solve(setup.model, setup.z0, result.theta, fine, rtol=1e-10, atol=1e-12)
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    for b in range(len(setup.z0)):
        line, = ax.plot(model[:, b, 0], model[:, b, 1], label=f"model, sample {b}")
        ax.plot(setup.data[:, b, 0], setup.data[:, b, 1], "o", color=line.get_color(),
                markersize=4, label=f"data, sample {b}")
    ax.set_xlabel("x")
    ax.set_ylabel("v")
    ax.set_title("phase plane: trained model vs data")
    ax.legend(fontsize=7)
    plot_loss(ax_loss, result, "training loss")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="interpolated_adjoint")
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--audit-every", type=int, default=25)
    parser.add_argument("--plot", metavar="PNG", help="phase plane and loss curve")
    args = parser.parse_args(argv)
    setup = make_setup(hidden=args.hidden, method=args.method)
    print(f"model f = A tanh(B z + b) with {args.hidden} hidden units ({setup.model.p} "
          f"parameters), method {setup.method}; data: damped pendulum, {len(setup.z0)} "
          f"trajectories x {len(setup.times) - 1} observations")
    result = train(setup, iterations=args.iterations, audit_every=args.audit_every)
    print_history(result, every=25)
    if result.stopped_by_audit:
        print(f"\ntraining stopped: the audit of the {setup.method} gradient failed.\n")
        print(result.report)
        return 1
    print(f"\nloss {result.initial_loss:.3e} -> {result.final_loss:.3e} "
          f"({result.initial_loss / result.final_loss:.0f}x lower)")
    print(f"trained trajectories vs data: largest deviation {fit_error(setup, result):.2e} "
          "of the data's range")
    if args.plot:
        plot_fit(setup, result, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
