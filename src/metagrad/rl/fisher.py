"""The KL's Hessian through MAML's adaptation, as a chain of cheap second-order products.

TRPO's constraint is ``KL(theta) = mean KL(pi_old || pi_{phi(theta)})`` where the adapted
parameters ``phi(theta)`` come from ``K`` inner steps ``phi_k = phi_{k-1} - a_k g_k(phi_{k-1})``
(per task; ``phi_0`` is ``theta`` expanded over tasks). At the trust region's centre the old
policy *is* ``pi_{phi(theta)}``, so ``d KL / d phi = 0`` there and the chain rule's
second-derivative term vanishes exactly:

    H_theta v = J^T F J v,    J = d phi / d theta,    F = d^2 KL / d phi^2 (at phi(theta)).

``J v`` and ``J^T w`` are products with ``prod_k (I - a_k H_k)``, ``H_k`` the inner loss's
per-task Hessian at ``phi_{k-1}`` (symmetric, so the same product serves both directions), and
expanding ``theta`` over tasks makes ``J^T`` end with a sum over tasks. Every factor is a plain
double-backward product on the policy network alone, so one Hessian-vector product costs
``2K + 1`` small second-order passes instead of a backward pass through the gradient of the
whole adaptation (third-order in the inner loss), and it is the same number, not an
approximation (tested against :func:`metagrad.rl.trpo.hessian_vector_product`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from metagrad.functional.inner import gradients
from metagrad.functional.optim import LearningRate, lr_schedule
from metagrad.functional.params import Params, detached
from metagrad.rl.objectives import Batch, OldPolicy, reinforce_loss, surrogate_and_kl
from metagrad.rl.sampler import per_task
from metagrad.rl.trpo import flatten, unflatten


class _Curvature:
    """``u -> d^2 f / d x^2 u`` for a scalar ``f`` of per-task leaves ``x`` (graph kept)."""

    def __init__(self, f: Callable[[Params], Tensor], at: Params, what: str) -> None:
        self.leaves = {k: v.detach().requires_grad_() for k, v in at.items()}
        self.grads = gradients(f(self.leaves), self.leaves, create_graph=True, what=what)

    def __call__(self, u: Params) -> Params:
        names = [k for k in self.grads if self.grads[k].requires_grad]
        dot = sum((self.grads[k] * u[k]).sum() for k in names)
        hv = torch.autograd.grad(
            dot, [self.leaves[k] for k in names], retain_graph=True, allow_unused=True
        )
        out = {k: torch.zeros_like(u[k]) for k in u}  # a parameter with no curvature: zero
        out.update({k: h for k, h in zip(names, hv) if h is not None})
        return out


def adaptation_fisher_product(
    policy: nn.Module,
    theta: Params,
    train: Sequence[Batch],
    valid: Batch,
    old: OldPolicy,
    inner_lr: LearningRate | Sequence[LearningRate],
    first_order: bool = False,
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """``v -> (d^2 KL / d theta^2) v + damping v`` through the adaptation, at ``theta``.

    Args:
        policy: the policy module.
        theta: meta-parameters (shared by all tasks).
        train: processed adaptation episodes, one batch per inner step.
        valid: the episodes sampled with the adapted parameters.
        old: the adapted policy on ``valid`` (its distribution must be ``phi(theta)``'s: the
            product is exact only at the trust region's centre).
        inner_lr: the inner step size, or one per step.
        first_order: treat the adaptation's Jacobian as the identity (FOMAML).
        damping: Tikhonov damping added to the product (TRPO's ``cg_damping``).

    Returns:
        A function of a flat vector (:func:`metagrad.rl.trpo.flatten`'s layout), reusable.
    """
    tasks = valid.obs.shape[0]
    lrs = lr_schedule(inner_lr, len(train))
    phi = per_task(policy, detached(theta), tasks)
    steps: list[tuple[_Curvature, LearningRate]] = []
    for batch, lr in zip(train, lrs):

        def inner(p: Params, batch: Batch = batch) -> Tensor:
            return reinforce_loss(policy, p, batch)

        if first_order:  # only the values of phi are needed
            with torch.enable_grad():
                p = {k: v.detach().requires_grad_() for k, v in phi.items()}
                g = gradients(inner(p), p, create_graph=False)
        else:
            curvature = _Curvature(inner, phi, "inner loss")
            steps.append((curvature, lr))
            g = curvature.grads
        phi = {k: (v - lr * g[k]).detach() if k in g else v for k, v in phi.items()}
    fisher = _Curvature(lambda p: surrogate_and_kl(policy, p, valid, old)[1], phi, "mean KL")

    def product(vector: Tensor) -> Tensor:
        u = per_task(policy, unflatten(vector, theta), tasks)  # J_0 v: the same v for every task
        for curvature, lr in steps:  # J v = prod_k (I - a_k H_k) v, first step first
            hu = curvature(u)
            u = {k: u[k] - lr * hu[k] for k in u}
        w = fisher(u)
        for curvature, lr in reversed(steps):  # J^T w, last step first
            hw = curvature(w)
            w = {k: w[k] - lr * hw[k] for k in w}
        return flatten({k: w[k].sum(0) for k in theta}) + damping * vector

    return product
