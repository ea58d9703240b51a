"""MAML-TRPO (Finn et al. 2017, §5.3): policy-gradient adaptation, TRPO meta-update.

One meta-iteration, all tasks batched (per-task parameters ``[tasks, ...]``):

1. Sample ``trajectories`` episodes per task with the meta-parameters ``theta``; process them
   (discounted returns, per-task linear baseline, GAE, per-task advantage normalisation).
2. Adapt: one REINFORCE step per inner step with :func:`metagrad.functional.adapt` on the
   *sum* over tasks of each task's mean ``-log pi(a|s) * A`` (so each task gets its own
   gradient). With several inner steps, fresh episodes are sampled with the parameters adapted
   so far before each step, as the reference code does.
3. Sample episodes with the adapted parameters (the "validation" episodes).
4. TRPO on ``theta``: minimise the surrogate ``-mean_tasks mean_steps ratio * A`` where
   ``ratio = pi_{theta'(theta)}(a|s) / pi_old(a|s)`` on the validation episodes (``theta'`` the
   adapted parameters, a function of ``theta`` through the adaptation), subject to the mean
   ``KL(pi_old || pi_{theta'(theta)}) <= max_kl``. The step direction is conjugate gradient on
   exact Hessian-vector products of that KL *through the adaptation* (in the cheap form of
   :mod:`metagrad.rl.fisher`); the step is backtracked
   until the surrogate improves within the trust region.

The losses and their conventions (advantage normalisation per task, as the references) are in
:mod:`metagrad.rl.objectives`. As in the references, the dependence of the later episodes'
*distribution* on ``theta`` is ignored (no DiCE / ProMP correction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metagrad.functional.optim import LearningRate
from metagrad.functional.params import Params
from metagrad.rl.adaptation import adaptation_rollouts
from metagrad.rl.envs.base import BatchedEnv, Task
from metagrad.rl.fisher import adaptation_fisher_product
from metagrad.rl.objectives import (
    Batch,
    adapt_policy,
    old_policy,
    process,
    surrogate_and_kl,
)
from metagrad.rl.trpo import Product, trpo_step


@dataclass(frozen=True)
class MAMLTRPOConfig:
    """Hyper-parameters (defaults: the paper's, REFERENCE.md).

    Attributes:
        inner_lr: inner step size, or one per inner step (e.g. ``(0.1, 0.05)``).
        inner_steps: adaptation steps during meta-training.
        first_order: ignore second derivatives of the adaptation (FOMAML).
        trajectories: episodes per task per sampling (20; 40 for ant direction).
        gamma: discount.
        gae_lambda: GAE's lambda (1: plain returns minus baseline).
        max_kl: trust region on the mean KL.
        cg_iters: conjugate gradient iterations.
        cg_damping: damping added to the Hessian-vector products.
        ls_backtrack_ratio: backtracking factor of the line search.
        ls_max_steps: line search candidates.
        fisher_tasks: compute the KL's Hessian on the first ``fisher_tasks`` tasks only
            (faster; ``None``: all tasks).
    """

    inner_lr: float | Sequence[float] = 0.1
    inner_steps: int = 1
    first_order: bool = False
    trajectories: int = 20
    gamma: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_backtrack_ratio: float = 0.8
    ls_max_steps: int = 15
    fisher_tasks: int | None = None


def trpo_update(
    policy: nn.Module,
    theta: Params,
    train: Sequence[Batch],
    valid: Batch,
    config: MAMLTRPOConfig,
) -> tuple[Params, dict[str, Any]]:
    """One TRPO step on the post-adaptation surrogate; returns new ``theta`` and statistics.

    Args:
        policy: the policy module.
        theta: meta-parameters.
        train: processed adaptation episodes, one batch per inner step.
        valid: processed episodes sampled with the adapted parameters.
        config: hyper-parameters.
    """
    start = time.perf_counter()
    train, valid = [b.packed() for b in train], valid.packed()  # skip the ended episodes' steps
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    adapted = adapt_policy(policy, theta, train, config.inner_lr, config.first_order)
    old = old_policy(policy, adapted, valid)
    loss = surrogate_and_kl(policy, adapted, valid, old)[0]
    adaptation = time.perf_counter() - start
    tasks = slice(config.fisher_tasks)  # the KL's Hessian on the first fisher_tasks tasks only

    def hvp() -> Product:
        return adaptation_fisher_product(
            policy,
            theta,
            [b.select(tasks) for b in train],
            valid.select(tasks),
            old.select(tasks),
            config.inner_lr,
            config.first_order,
            config.cg_damping,
        )

    def evaluate(candidate: Params) -> tuple[Tensor, Tensor]:
        new = adapt_policy(policy, candidate, train, config.inner_lr, first_order=True)
        return surrogate_and_kl(policy, new, valid, old)

    new_theta, stats = trpo_step(loss, theta, hvp, evaluate, config)
    stats["time"] = {"adaptation": adaptation, **stats["time"]}
    return new_theta, stats


def meta_iteration(
    env: BatchedEnv,
    policy: nn.Module,
    theta: Params,
    tasks: Sequence[Task],
    config: MAMLTRPOConfig,
    generator: torch.Generator | None = None,
) -> tuple[Params, dict[str, Any]]:
    """One MAML-TRPO meta-iteration on ``tasks`` (see the module docstring).

    Args:
        env: batched environment of the task family.
        policy: the policy module.
        theta: meta-parameters (e.g. ``dict(policy.named_parameters())``); not modified.
        tasks: the meta-batch.
        config: hyper-parameters.
        generator: source of all sampling randomness.

    Returns:
        ``(new_theta, stats)``: new meta-parameters (leaf tensors requiring grad; load them
        with ``policy.load_state_dict(new_theta, strict=False)`` to keep the module in sync)
        and statistics: ``return_before`` / ``return_after`` (mean undiscounted episode
        return before / after adaptation), ``returns`` (after each inner step), ``loss_before``,
        ``loss_after``, ``kl``, ``step_fraction``, ``accepted``, and ``time`` (seconds spent in
        ``sampling``, ``adaptation``, ``conjugate_gradient``, ``line_search``, ``total``).
    """
    if config.inner_steps < 1:
        raise ValueError(f"MAML-TRPO needs inner_steps >= 1, got {config.inner_steps}")
    begin = time.perf_counter()
    timings = {"sampling": 0.0, "adaptation": 0.0}
    train, returns = [], []
    for r in adaptation_rollouts(
        env,
        policy,
        theta,
        tasks,
        config.trajectories,
        config.inner_lr,
        config.inner_steps,
        config.gamma,
        config.gae_lambda,
        generator,
    ):
        timings["sampling"] += r.sampling_s
        timings["adaptation"] += r.adaptation_s
        returns.append(r.trajectories.mean_return())
        if r.batch is not None:
            train.append(r.batch)
        else:  # the validation episodes, sampled with the adapted parameters
            start = time.perf_counter()
            valid = process(r.trajectories, config.gamma, config.gae_lambda)
            timings["adaptation"] += time.perf_counter() - start
    new_theta, stats = trpo_update(policy, theta, train, valid, config)
    for key, value in stats.pop("time").items():
        timings[key] = timings.get(key, 0.0) + value
    timings["total"] = time.perf_counter() - begin
    stats.update(return_before=returns[0], return_after=returns[-1], returns=returns, time=timings)
    return new_theta, stats


def evaluate_adaptation(
    env: BatchedEnv,
    policy: nn.Module,
    theta: Params,
    tasks: Sequence[Task],
    trajectories: int = 20,
    inner_lr: LearningRate | Sequence[LearningRate] = (0.1, 0.05, 0.05),
    steps: int = 3,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Mean episode return on ``tasks`` after 0, 1, ..., ``steps`` adaptation steps.

    Each step samples ``trajectories`` fresh episodes per task with the current (adapted)
    parameters and takes one REINFORCE step on them, as at meta-training time (the paper's test
    protocol; :func:`metagrad.rl.adaptation.adaptation_rollouts`).

    Returns:
        ``steps + 1`` average undiscounted returns.
    """
    rollouts = adaptation_rollouts(
        env, policy, theta, tasks, trajectories, inner_lr, steps, gamma, gae_lambda, generator
    )
    return [r.trajectories.mean_return() for r in rollouts]
