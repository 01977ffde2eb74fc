"""The spiral of the Neural-ODE literature, learned by a width-50 network with an audited
gradient.

The data are the classic spiral ``dy/dt = (y³) A`` with ``A = [[-0.1, 2], [-2, -0.1]]``
(``y`` a row, ``y³`` elementwise), from ``y(0) = (2, 0)`` over ``t`` in [0, 25]. The model
is the Neural ODE ``f(y) = W2 tanh(W1 y³ + b1) + b2`` with 50 hidden units, written in
matrix form (252 parameters). As in the literature, it is trained on short windows of the
trajectory: every window starts at a data point and is compared with the next few data
points, all windows in one batch. L-BFGS takes the gradient of the method you pick; every
k-th evaluation that gradient is audited (against forward sensitivity at rtol 1e-13); a
failed audit stops the run. At the end the trained model is integrated from ``y(0)`` over
the whole span and compared with the data.

    python examples/learn_spiral.py
    python examples/learn_spiral.py --plot spiral.png        # needs matplotlib
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

A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = np.array([2.0, 0.0])
WIDTH = 50

Z = sp.MatrixSymbol("y", 2, 1)
TARGET = sp.MatrixSymbol("d", 2, 1)
LOSS = ((Z - TARGET).T * (Z - TARGET))[0, 0] / 2
SPIRAL = Dynamics(rhs=sp.ImmutableMatrix(A_TRUE.T) * Z.applyfunc(lambda u: u**3), state=Z)


def spiral_model(width: int = WIDTH) -> Dynamics:
    """``W2 tanh(W1 y³ + b1) + b2`` in matrix form; theta = [W1, b1, W2, b2] row-major."""
    W1, b1 = sp.MatrixSymbol("W1", width, 2), sp.MatrixSymbol("b1", width, 1)
    W2, b2 = sp.MatrixSymbol("W2", 2, width), sp.MatrixSymbol("b2", 2, 1)
    cube = Z.applyfunc(lambda u: u**3)
    return Dynamics(rhs=W2 * (W1 * cube + b1).applyfunc(sp.tanh) + b2, state=Z,
                    params=[W1, b1, W2, b2])


@dataclass
class Setup:
    model: Dynamics
    theta_start: np.ndarray
    t: np.ndarray  # the data's times over the whole span
    y: np.ndarray  # (len(t), 2), the spiral
    z0: np.ndarray  # (windows, 2): where each window starts
    times: np.ndarray  # (window + 1,): the windows' own times, from 0
    data: np.ndarray  # (window, windows, 2)
    method: str
    rtol: float


def make_setup(*, width: int = WIDTH, points: int = 1000, span: float = 25.0,
               windows: int = 40, window: int = 10, method: str = "interpolated_adjoint",
               seed: int = 0, rtol: float = 1e-8) -> Setup:
    t = np.linspace(0.0, span, points)
    y = solve(SPIRAL, Y0, [], t, solver="dopri5", rtol=1e-11, atol=1e-13)
    starts = np.linspace(0, points - window - 1, windows).astype(int)
    data = np.stack([y[s + 1 : s + window + 1] for s in starts], axis=1)
    rng = np.random.default_rng(seed)
    # the literature's start: weights N(0, 0.1), biases 0
    theta = np.concatenate([0.1 * rng.standard_normal(2 * width), np.zeros(width),
                            0.1 * rng.standard_normal(2 * width), np.zeros(2)])
    return Setup(spiral_model(width), theta, t, y, y[starts], t[: window + 1] - t[0], data,
                 method, rtol)


def train(setup: Setup, *, iterations: int = 300, audit_every: int = 25) -> Training:
    options = {"solver": "dopri5", "rtol": setup.rtol, "atol": setup.rtol / 100}
    return train_audited(setup.model, LOSS, TARGET, setup.z0, setup.times, setup.data,
                         setup.theta_start, method=setup.method, options=options,
                         audit_rtol=1e3 * setup.rtol, audit_every=audit_every,
                         iterations=iterations)


def trajectory(setup: Setup, theta: np.ndarray) -> np.ndarray:
    """The trained model from ``y(0)`` over the whole span, ``(len(t), 2)``."""
    return solve(setup.model, Y0, theta, setup.t, solver="dopri5", rtol=1e-9, atol=1e-11)


def fit_error(setup: Setup, training: Training) -> float:
    """Largest distance between the model's and the data's spiral, relative to the data's
    range (over the whole span, from y(0) alone: a long-horizon test)."""
    deviation = np.max(np.linalg.norm(trajectory(setup, training.theta) - setup.y, axis=1))
    return float(deviation / np.ptp(setup.y, axis=0).max())


def plot(setup: Setup, training: Training, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = trajectory(setup, training.theta)
    fig, (phase, loss) = plt.subplots(1, 2, figsize=(10, 4.5))
    phase.plot(setup.y[:, 0], setup.y[:, 1], "k-", lw=1, label="data: dy/dt = (y³) A")
    phase.plot(fit[:, 0], fit[:, 1], "C1--", lw=1.5,
               label=f"Neural ODE, width {setup.model.param_shapes['W1'][0]}")
    phase.plot(*Y0, "ko")
    phase.set_xlabel("y₁")
    phase.set_ylabel("y₂")
    phase.set_aspect("equal")
    phase.legend(loc="lower right", fontsize=8)
    phase.set_title("spiral, integrated from y(0) over [0, 25]")
    plot_loss(loss, training, "window loss (L-BFGS, audited gradient)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--audit-every", type=int, default=25)
    parser.add_argument("--method", default="interpolated_adjoint")
    parser.add_argument("--plot", metavar="PNG", help="the fit and the loss curve")
    args = parser.parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            print("--plot needs matplotlib: pip install 'adjoint-verify[plot]'",
                  file=sys.stderr)
            return 2
    setup = make_setup(method=args.method)
    print(f"model: {setup.model}")
    print(f"{setup.z0.shape[0]} windows of {len(setup.times) - 1} observations; "
          f"p = {setup.model.p} parameters; gradient: {setup.method}")
    training = train(setup, iterations=args.iterations, audit_every=args.audit_every)
    print_history(training, every=25)
    if training.stopped_by_audit:
        print("training stopped: the audit of the gradient failed.")
        print(training.report)
        return 1
    print(f"loss {training.initial_loss:.3e} -> {training.final_loss:.3e} "
          f"({training.initial_loss / training.final_loss:.0f}x lower)")
    print(f"spiral from y(0) over [0, 25] vs data: largest deviation "
          f"{fit_error(setup, training):.2e} of the data's range")
    if args.plot:
        plot(setup, training, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
