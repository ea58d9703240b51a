"""Collect whole trajectories for every task of a meta-batch at once.

One policy forward per time step serves all ``tasks x trajs`` episodes: the observations
``[tasks, trajs, obs]`` go through the policy with per-task parameters (the meta-parameters
expanded over tasks, or each task's adapted parameters), and the sampled actions go to a
:class:`metagrad.rl.envs.base.BatchedEnv` that steps every running episode (in torch for 2D
navigation, in worker processes for MuJoCo).

Reproducible: the action noise comes from ``generator`` and the environments' reset noise from
a seed drawn from it, so the same generator state gives the same trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metagrad.functional.params import Params, detached, expand_tasks
from metagrad.rl.envs.base import BatchedEnv, Task
from metagrad.rl.policy import distribution, sample
from metagrad.rl.trajectories import Trajectories


def per_task(policy: nn.Module, params: Params, tasks: int) -> Params:
    """``params`` with a leading task dimension: shared parameters are expanded (no copy).

    Under ``torch.no_grad()`` the result is detached from ``params``.

    Raises:
        ValueError: per-task parameters for a different number of tasks.
    """
    shapes = {name: p.shape for name, p in policy.named_parameters()}
    out = {}
    for name, p in params.items():
        if not torch.is_grad_enabled():
            # A view made under no_grad of a tensor requiring grad is a "leaf" whose uses are
            # recorded on its base: gradients w.r.t. it (in adapt) would come back empty.
            p = p.detach()
        base = len(shapes[name])
        if p.dim() == base:
            out[name] = expand_tasks({name: p}, tasks)[name]
        elif p.dim() == base + 1 and p.shape[0] == tasks:
            out[name] = p
        else:
            raise ValueError(
                f"parameter {name!r} has shape {tuple(p.shape)}: expected the policy's shape "
                f"(shared by all tasks) or [tasks={tasks}, ...] (one per task)"
            )
    return out


@torch.no_grad()
def rollout(
    env: BatchedEnv,
    policy: nn.Module,
    params: Params,
    tasks: Sequence[Task],
    trajs: int,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """Run ``trajs`` episodes of each task with the policy, all in lockstep.

    Args:
        env: the batched environment of the task family.
        policy: the policy module (:class:`metagrad.rl.policy.GaussianMLPPolicy`).
        params: the policy's parameters, shared (``[shape]``) or per task
            (``[tasks, *shape]``, e.g. adapted parameters); detached internally.
        tasks: one task per leading index of the result.
        trajs: episodes per task.
        generator: source of the action noise and of the environments' reset seed.

    Returns:
        :class:`Trajectories` padded to the longest episode.
    """
    if trajs < 1:
        raise ValueError(f"trajs must be >= 1, got {trajs}")
    params = per_task(policy, detached(params), len(tasks))
    dtype = next(iter(params.values())).dtype
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    obs = env.reset(tasks, trajs, seed).to(dtype)  # [tasks, trajs, obs]
    alive = torch.ones(len(tasks), trajs, dtype=torch.bool)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(env.horizon):
        mean, log_std = distribution(policy, params, obs)  # [tasks, trajs, act]
        action = sample(mean, log_std, generator)
        next_obs, reward, done = env.step(action)
        mask = alive.to(dtype)
        observations.append(obs * mask.unsqueeze(-1))
        actions.append(action * mask.unsqueeze(-1))
        rewards.append(reward.to(dtype) * mask)
        masks.append(mask)
        alive = alive & ~done
        if not alive.any():
            break
        obs = next_obs.to(dtype)
    return Trajectories(
        obs=torch.stack(observations, 2),  # [tasks, trajs, T, obs]
        actions=torch.stack(actions, 2),  # [tasks, trajs, T, act]
        rewards=torch.stack(rewards, 2),  # [tasks, trajs, T]
        mask=torch.stack(masks, 2),  # [tasks, trajs, T]
        tasks=tuple(dict(t) for t in tasks),
    )
