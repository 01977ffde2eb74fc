"""The benchmark's MLP gradient in diffrax and torchdiffeq, where they are installed.

Each factory returns a callable that computes ``dL/dz0`` and the parameter gradients of
``½|z(1)|²`` for ``f = W2 tanh(W1 z + b1) + b2`` by backpropagation through a 4-stage
fixed-step solver with ``steps`` steps, compiled and warmed up, or None when the library
is missing. diffrax has no classical RK4, so it is given one as a Butcher tableau;
torchdiffeq's ``rk4`` is Kutta's 3/8 rule, also 4 stages.
"""

from __future__ import annotations

import numpy as np


def diffrax_gradient_fn(W1, b1, W2, b2, z0, steps: int):
    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    class ClassicalRK4(diffrax.AbstractERK):
        tableau = diffrax.ButcherTableau(
            c=np.array([0.5, 0.5, 1.0]),
            b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
            b_error=np.zeros(4),
            a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        )
        interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

        def order(self, terms):
            return 4

    def f(t, y, args):
        w1, c1, w2, c2 = args
        return jnp.tanh(y @ w1.T + c1) @ w2.T + c2

    term = diffrax.ODETerm(f)

    def loss(y0, args):
        solution = diffrax.diffeqsolve(
            term, ClassicalRK4(), 0.0, 1.0, 1.0 / steps, y0, args=args,
            saveat=diffrax.SaveAt(t1=True), stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=steps, adjoint=diffrax.RecursiveCheckpointAdjoint())
        return 0.5 * jnp.sum(solution.ys[-1] ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    args = tuple(jnp.asarray(x) for x in (W1, b1, W2, b2))
    y0 = jnp.asarray(z0)

    def run():
        return jax.block_until_ready(grad(y0, args))

    run()
    return run


def torchdiffeq_gradient_fn(W1, b1, W2, b2, z0, steps: int):
    try:
        import torch
        import torchdiffeq
    except ImportError:
        return None
    torch.set_num_threads(1)
    params = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (W1, b1, W2, b2)]
    y0 = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def f(_, y):
        w1, c1, w2, c2 = params
        return torch.tanh(y @ w1.T + c1) @ w2.T + c2

    def run():
        ys = torchdiffeq.odeint(f, y0, t, method="rk4", options={"step_size": 1.0 / steps})
        loss = 0.5 * torch.sum(ys[-1] ** 2)
        return torch.autograd.grad(loss, [y0, *params])

    run()
    return run
