"""The "pretrained" baseline of MAML §5.3: one policy trained by TRPO on all tasks at once.

Each iteration samples episodes of every task of a meta-batch with the same parameters
``theta`` and takes one TRPO step on the mean over tasks of each task's surrogate (advantages
from each task's own linear baseline, normalised per task, as for MAML), under the same trust
region. There is no adaptation during training; at test time the policy is fine-tuned on each
task with the same policy-gradient steps as MAML's (:mod:`metagrad.rl.testing`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metagrad.functional.params import Params
from metagrad.rl.envs.base import BatchedEnv, Task
from metagrad.rl.maml_trpo import MAMLTRPOConfig
from metagrad.rl.objectives import Batch, old_policy, process, surrogate_and_kl
from metagrad.rl.sampler import per_task, rollout
from metagrad.rl.trpo import conjugate_gradient, flatten, hessian_vector_product, line_search


def trpo_step(
    policy: nn.Module, theta: Params, batch: Batch, config: MAMLTRPOConfig
) -> tuple[Params, dict[str, Any]]:
    """One TRPO step of the shared parameters ``theta`` on the episodes of all tasks.

    Args:
        policy: the policy module.
        theta: the parameters the episodes were sampled with.
        batch: processed episodes ``[tasks, trajs, T, ...]``.
        config: TRPO's settings (``max_kl``, ``cg_*``, ``ls_*``); the inner loop's are unused.

    Returns:
        New leaf parameters and statistics (``loss_before``, ``loss_after``, ``kl``,
        ``step_fraction``, ``accepted``, ``line_search_evaluations``, ``time``).
    """
    start = time.perf_counter()
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    tasks = batch.obs.shape[0]
    old = old_policy(policy, per_task(policy, theta, tasks), batch)
    loss, kl = surrogate_and_kl(policy, per_task(policy, theta, tasks), batch, old)
    grads = torch.autograd.grad(loss, list(theta.values()), retain_graph=True)
    hvp = hessian_vector_product(kl, theta, config.cg_damping)
    direction = conjugate_gradient(hvp, flatten(dict(zip(theta, grads))), config.cg_iters)
    shs = direction @ hvp(direction)
    full_step = torch.sqrt(2 * config.max_kl / (shs + 1e-8)) * direction
    cg_time = time.perf_counter() - start

    def evaluate(candidate: Params) -> tuple[Tensor, Tensor]:
        return surrogate_and_kl(policy, per_task(policy, candidate, tasks), batch, old)

    start = time.perf_counter()
    result = line_search(
        evaluate,
        theta,
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


def multitask_iteration(
    env: BatchedEnv,
    policy: nn.Module,
    theta: Params,
    tasks: Sequence[Task],
    config: MAMLTRPOConfig,
    generator: torch.Generator | None = None,
) -> tuple[Params, dict[str, Any]]:
    """Sample ``config.trajectories`` episodes of each task with ``theta``, then one TRPO step.

    Returns:
        ``(new_theta, stats)`` as :func:`metagrad.rl.maml_trpo.meta_iteration`, without the
        post-adaptation return: ``return_before`` (mean episode return), ``returns``
        (``[return_before]``), the TRPO statistics and ``time`` (``sampling``,
        ``processing``, ``conjugate_gradient``, ``line_search``, ``total``).
    """
    begin = time.perf_counter()
    traj = rollout(env, policy, theta, tasks, config.trajectories, generator)
    sampled = time.perf_counter()
    batch = process(traj, config.gamma, config.gae_lambda)
    timings = {"sampling": sampled - begin, "processing": time.perf_counter() - sampled}
    new_theta, stats = trpo_step(policy, theta, batch, config)
    timings.update(stats.pop("time"))
    timings["total"] = time.perf_counter() - begin
    ret = traj.mean_return()
    stats.update(return_before=ret, returns=[ret], time=timings)
    return new_theta, stats
