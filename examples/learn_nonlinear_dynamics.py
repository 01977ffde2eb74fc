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
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import sympy as sp

from numeric import gradient, solve
from symbolic import Dynamics
from verification import audit_gradient, solver_tolerance

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


@dataclass
class Result:
    theta: np.ndarray
    history: list = field(default_factory=list)  # (evaluation, loss, |grad|, audit)
    stopped_by_audit: bool = False
    report: object = None

    @property
    def initial_loss(self) -> float:
        return self.history[0][1]

    @property
    def final_loss(self) -> float:
        return min(h[1] for h in self.history)


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


def train(setup: Setup, *, iterations: int = 300, audit_every: int = 25) -> Result:
    options = {"rtol": setup.rtol, "atol": setup.rtol / 100}
    audit_rtol = solver_tolerance(setup.rtol, setup.rtol / 100)
    # near the minimum the gradient's terms cancel: hold it to the solver's accuracy on the
    # scale of the first gradient (atol) as well as relative to itself (rtol)
    scale = [0.0]
    result = Result(theta=setup.theta_start.copy())

    def grad_fn(z0, theta, times):
        g = gradient(setup.model, z0, theta, times, loss=LOSS, targets=Y, data=setup.data,
                     method=setup.method, **options)
        return g.z0, g.theta, g.times

    class AuditFailed(Exception):
        pass

    def objective(theta):
        g = gradient(setup.model, setup.z0, theta, setup.times, loss=LOSS, targets=Y,
                     data=setup.data, method=setup.method, **options)
        evaluation = len(result.history)
        status = ""
        if evaluation == 0:  # the gradient's natural scale, before its terms cancel
            scale[0] = float(np.linalg.norm(g.theta))
        if evaluation % audit_every == 0:
            report = audit_gradient(setup.model, grad_fn, setup.z0, theta, setup.times,
                                    loss=LOSS, targets=Y, data=setup.data, rtol=audit_rtol,
                                    atol=audit_rtol * scale[0], name=setup.method)
            status = "pass" if report.passed else "FAIL"
            if not report.passed:
                result.report = report
                result.history.append((evaluation, g.loss, float(np.linalg.norm(g.theta)),
                                       status))
                raise AuditFailed
        result.history.append((evaluation, g.loss, float(np.linalg.norm(g.theta)), status))
        if g.loss <= result.final_loss:
            result.theta = theta.copy()
        return g.loss, g.theta

    try:
        scipy.optimize.minimize(objective, setup.theta_start, jac=True, method="L-BFGS-B",
                                options={"maxiter": iterations, "maxfun": iterations,
                                         "ftol": 1e-14, "gtol": 1e-10})
    except AuditFailed:
        result.stopped_by_audit = True
    return result


def fit_error(setup: Setup, result: Result) -> float:
    """Largest distance between the trained model's trajectories and the data, relative to
    the largest data value."""
    model = trajectories(setup, result.theta)
    return float(np.max(np.abs(model - setup.data)) / np.max(np.abs(setup.data)))


def plot_fit(setup: Setup, result: Result, path: str) -> None:
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
    ax_loss.semilogy([h[0] for h in result.history], [h[1] for h in result.history])
    ax_loss.set_xlabel("function evaluation")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(True, which="both", alpha=0.3)
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
    print(f"{'eval':>5} {'loss':>12} {'|dL/dtheta|':>12}  audit")
    for evaluation, loss, norm, status in result.history:
        if evaluation % 25 == 0 or status or evaluation == len(result.history) - 1:
            print(f"{evaluation:>5} {loss:12.4e} {norm:12.2e}  {status}")
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
