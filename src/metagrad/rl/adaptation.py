"""Adaptation on fresh rollouts: sample, process, take a policy-gradient step, repeat.

MAML-RL adapts a policy to a task from its own episodes: sample ``trajectories`` episodes per
task with the current per-task parameters, process them (returns, baseline, advantages), take
one first-order REINFORCE step on them, and sample again with the adapted parameters. Meta-
training (:func:`metagrad.rl.maml_trpo.meta_iteration`), the test protocol and the figures all
run this loop through :func:`adaptation_rollouts`, so they draw the same episodes from the same
generator state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metagrad.functional.optim import LearningRate, lr_schedule
from metagrad.functional.params import Params, detached
from metagrad.rl.envs.base import BatchedEnv, Task
from metagrad.rl.objectives import Batch, adapt_policy, process
from metagrad.rl.sampler import per_task, rollout
from metagrad.rl.trajectories import Trajectories


@dataclass(frozen=True)
class AdaptationRollout:
    """The episodes sampled after ``step`` adaptation steps, and the step taken on them.

    Attributes:
        step: adaptation steps taken before ``trajectories`` were sampled (0: with ``theta``).
        trajectories: the episodes of every task.
        batch: ``trajectories`` processed, the next step's data (``None`` after the last step:
            nothing adapts on them).
        params: the per-task parameters after the next step (after the last step, the ones
            ``trajectories`` were sampled with), detached.
        sampling_s: seconds spent sampling ``trajectories``.
        adaptation_s: seconds spent processing them and taking the next step.
    """

    step: int
    trajectories: Trajectories
    batch: Batch | None
    params: Params
    sampling_s: float
    adaptation_s: float


def adaptation_rollouts(
    env: BatchedEnv,
    policy: nn.Module,
    theta: Params,
    tasks: Sequence[Task],
    trajectories: int,
    inner_lr: LearningRate | Sequence[LearningRate],
    steps: int,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    generator: torch.Generator | None = None,
) -> Iterator[AdaptationRollout]:
    """Yield the episodes after 0, 1, ..., ``steps`` first-order adaptation steps.

    Each step is taken before its episodes are yielded, and only the sampling draws from
    ``generator`` (the action noise and the environments' reset seed), in step order.

    Args:
        env: the batched environment of the task family.
        policy: the policy module.
        theta: the parameters to adapt from (shared by all tasks; not modified).
        tasks: one task per leading index of the episodes.
        trajectories: episodes per task per step.
        inner_lr: the step size, or one per step.
        steps: adaptation steps (``steps + 1`` rollouts are yielded).
        gamma: discount.
        gae_lambda: GAE's lambda.
        generator: source of all sampling randomness.

    Raises:
        ValueError: fewer per-step step sizes than ``steps`` (before anything is sampled).
    """
    lrs = lr_schedule(inner_lr, steps)
    params = per_task(policy, detached(theta), len(tasks))
    for step in range(steps + 1):
        start = time.perf_counter()
        traj = rollout(env, policy, params, tasks, trajectories, generator)
        sampled = time.perf_counter()
        batch = None
        if step < steps:
            batch = process(traj, gamma, gae_lambda)
            new = adapt_policy(policy, params, [batch], lrs[step], first_order=True)
            params = detached(new)
        yield AdaptationRollout(
            step, traj, batch, params, sampled - start, time.perf_counter() - sampled
        )


def adaptation_returns(*args: Any, **kwargs: Any) -> np.ndarray:
    """Each task's mean return after 0..``steps`` policy-gradient steps: ``[steps + 1, tasks]``.

    Takes the arguments of :func:`adaptation_rollouts`. The same computation as
    :func:`metagrad.rl.maml_trpo.evaluate_adaptation` (which returns the mean over tasks), kept
    per task for the intervals.
    """
    rollouts = adaptation_rollouts(*args, **kwargs)
    return np.stack([r.trajectories.returns().mean(1).double().numpy() for r in rollouts])
