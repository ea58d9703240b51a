"""TRPO on parameter dicts (Schulman et al. 2015, as in rllab's ``ConjugateGradientOptimizer``):
flat vectors, Hessian-vector products, conjugate gradient, the backtracking line search, and
:func:`trpo_step`, the whole step built from them (MAML-TRPO and the pretrained baseline differ
only in the loss, the Hessian-vector product and the candidates' evaluation).

The Hessian-vector product is exact: the gradient of the constraint is built with
``create_graph=True`` once, and each product is one more backward pass through it (double
backward). When the constraint depends on the parameters through MAML's adaptation, the
product goes through the adaptation too. (The paper's TRPO used finite differences.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from metagrad.functional.params import Params, detached

Evaluate = Callable[[Params], tuple[Tensor, Tensor]]
Product = Callable[[Tensor], Tensor]


class TRPOSettings(Protocol):
    """The settings :func:`trpo_step` reads (e.g. :class:`metagrad.rl.maml_trpo.MAMLTRPOConfig`)."""

    @property
    def max_kl(self) -> float: ...
    @property
    def cg_iters(self) -> int: ...
    @property
    def ls_backtrack_ratio(self) -> float: ...
    @property
    def ls_max_steps(self) -> int: ...


def flatten(tensors: Params) -> Tensor:
    """Concatenate a dict of tensors into one vector (in the dict's order)."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Split ``vector`` into tensors shaped like ``like``'s (inverse of :func:`flatten`)."""
    out, start = {}, 0
    for name, t in like.items():
        out[name] = vector[start : start + t.numel()].view_as(t)
        start += t.numel()
    if start != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the parameters {start}")
    return out


def hessian_vector_product(
    scalar: Tensor, params: Params, damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """``v -> (d^2 scalar / d params^2) v + damping v`` by exact double backward.

    Args:
        scalar: a scalar function of ``params`` (e.g. the mean KL) with its graph.
        params: the leaf tensors to differentiate with respect to.
        damping: Tikhonov damping added to the product (TRPO's ``cg_damping``).

    Returns:
        A function of a flat vector (same layout as :func:`flatten`), reusable many times.
    """
    names = list(params)
    grads = torch.autograd.grad(scalar, [params[k] for k in names], create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def product(vector: Tensor) -> Tensor:
        hv = torch.autograd.grad(flat_grad @ vector, [params[k] for k in names], retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]) + damping * vector

    return product


def conjugate_gradient(
    mvp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Approximately solve ``A x = b`` for a symmetric positive-definite ``A`` given by ``mvp``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        z = mvp(p)
        alpha = rr / (p @ z)
        x = x + alpha * p
        r = r - alpha * z
        rr_new = r @ r
        if rr_new < residual_tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`line_search`.

    Attributes:
        params: the accepted parameters (the old ones when nothing was accepted).
        loss: the surrogate loss at ``params``.
        kl: the constraint at ``params``.
        step_fraction: the accepted fraction of the full step (0 when rejected).
        evaluations: how many candidate steps were evaluated.
        accepted: whether a step was taken.
    """

    params: Params
    loss: float
    kl: float
    step_fraction: float
    evaluations: int
    accepted: bool


@torch.no_grad()
def line_search(
    evaluate: Evaluate,
    params: Params,
    full_step: Tensor,
    loss_before: float,
    max_kl: float,
    ratio: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Backtrack ``params - ratio^k * full_step`` until the loss improves within the trust region.

    A candidate is accepted only when its loss is below ``loss_before`` and its constraint is at
    most ``max_kl`` (both finite); after ``max_steps`` rejections the old parameters are kept.

    Args:
        evaluate: ``evaluate(params) -> (loss, kl)`` scalars.
        params: the current parameters.
        full_step: the flat step (descent direction times the trust-region scale).
        loss_before: the loss at ``params``.
        max_kl: trust-region size.
        ratio: backtracking factor.
        max_steps: number of candidates.
    """
    flat = flatten(detached(params))
    fraction = 1.0
    for k in range(max_steps):
        candidate = unflatten(flat - fraction * full_step, params)
        loss, kl = (float(v) for v in evaluate(candidate))
        if loss < loss_before and kl <= max_kl:  # NaN fails both comparisons
            new = {n: v.clone() for n, v in candidate.items()}
            return LineSearchResult(new, loss, kl, fraction, k + 1, True)
        fraction *= ratio
    old = {n: v.detach().clone() for n, v in params.items()}
    return LineSearchResult(old, loss_before, 0.0, 0.0, max_steps, False)


def trpo_step(
    loss: Tensor,
    params: Params,
    hvp: Callable[[], Product],
    evaluate: Evaluate,
    config: TRPOSettings,
    retain_graph: bool = False,
) -> tuple[Params, dict[str, Any]]:
    """One TRPO step: gradient, conjugate gradient, trust-region scaling, line search.

    The direction ``d`` solves ``H d = g`` (``g`` the gradient of ``loss``, ``H`` the
    constraint's Hessian given by ``hvp``) by conjugate gradient; the full step is
    ``sqrt(2 max_kl / d^T H d) d``, backtracked by :func:`line_search`.

    Args:
        loss: the surrogate loss at ``params``, with its graph.
        params: the leaf parameters ``loss`` was computed from.
        hvp: builds the constraint's Hessian-vector product (called once, after the gradient
            of ``loss`` is taken).
        evaluate: ``evaluate(candidate) -> (loss, kl)`` for the line search.
        config: ``max_kl``, ``cg_iters``, ``ls_backtrack_ratio``, ``ls_max_steps``.
        retain_graph: keep the graph of ``loss`` after its gradient (when ``hvp`` shares it).

    Returns:
        New leaf parameters (requiring grad) and statistics: ``loss_before``, ``loss_after``,
        ``kl``, ``step_fraction``, ``line_search_evaluations``, ``accepted`` and ``time``
        (seconds in ``conjugate_gradient``: gradient, product and solve; ``line_search``).
    """
    start = time.perf_counter()
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=retain_graph)
    product = hvp()
    direction = conjugate_gradient(product, flatten(dict(zip(params, grads))), config.cg_iters)
    shs = direction @ product(direction)
    full_step = torch.sqrt(2 * config.max_kl / (shs + 1e-8)) * direction
    cg_time = time.perf_counter() - start

    start = time.perf_counter()
    result = line_search(
        evaluate,
        params,
        full_step.detach(),
        float(loss.detach()),
        config.max_kl,
        config.ls_backtrack_ratio,
        config.ls_max_steps,
    )
    stats = {
        "loss_before": float(loss.detach()),
        "loss_after": result.loss,
        "kl": result.kl,
        "step_fraction": result.step_fraction,
        "line_search_evaluations": result.evaluations,
        "accepted": result.accepted,
        "time": {"conjugate_gradient": cg_time, "line_search": time.perf_counter() - start},
    }
    return {k: v.detach().requires_grad_() for k, v in result.params.items()}, stats
