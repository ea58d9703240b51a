"""The "pretrained" baseline of MAML §5.3: one policy trained by TRPO on all tasks at once.

Each iteration samples episodes of every task of a meta-batch with the same parameters
``theta`` and takes one TRPO step on the mean over tasks of each task's surrogate (advantages
from each task's own linear baseline, normalised per task, as for MAML), under the same trust
region. There is no adaptation during training; at test time the policy is fine-tuned on each
task with the same policy-gradient steps as MAML's (:mod:`metagrad.rl.adaptation`).
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
from metagrad.rl.trpo import Product, hessian_vector_product, trpo_step


def multitask_update(
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
    batch = batch.packed()  # skip the ended episodes' steps
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    tasks = batch.obs.shape[0]
    old = old_policy(policy, per_task(policy, theta, tasks), batch)
    loss, kl = surrogate_and_kl(policy, per_task(policy, theta, tasks), batch, old)
    forward = time.perf_counter() - start

    def evaluate(candidate: Params) -> tuple[Tensor, Tensor]:
        return surrogate_and_kl(policy, per_task(policy, candidate, tasks), batch, old)

    def hvp() -> Product:  # the KL shares the loss's graph: retained below
        return hessian_vector_product(kl, theta, config.cg_damping)

    new_theta, stats = trpo_step(loss, theta, hvp, evaluate, config, retain_graph=True)
    stats["time"]["conjugate_gradient"] += forward  # the forward pass counts as before
    return new_theta, stats


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
    new_theta, stats = multitask_update(policy, theta, batch, config)
    timings.update(stats.pop("time"))
    timings["total"] = time.perf_counter() - begin
    ret = traj.mean_return()
    stats.update(return_before=ret, returns=[ret], time=timings)
    return new_theta, stats
