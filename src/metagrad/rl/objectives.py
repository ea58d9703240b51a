"""The objectives of MAML-RL on batches of episodes, all tasks at once.

- :func:`process`: discounted returns, per-task linear baseline, GAE (gamma 0.99, lambda 1)
  and per-task advantage normalisation.
- :func:`reinforce_loss`: the inner loss, the *sum* over tasks of each task's mean
  ``-log pi(a|s) * A``, so that adapting per-task parameters with it gives each task its own
  gradient; :func:`adapt_policy` takes one :func:`metagrad.functional.adapt` step per batch.
- :func:`surrogate_and_kl`: TRPO's importance-weighted surrogate and mean KL on the episodes
  sampled after adaptation.

Conventions checked against the references (rllab/MAML's code, pytorch-maml-rl): advantages
are normalised to mean 0, std 1 (population std, ``+1e-8``) over all valid steps of each task,
for the inner loss and the surrogate alike (rllab's ``center_adv``, applied to each task's
samples); losses average over each task's valid steps, then over tasks; the KL too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from metagrad.functional.inner import adapt
from metagrad.functional.optim import LearningRate, lr_schedule
from metagrad.functional.params import Params, detached
from metagrad.rl import baseline
from metagrad.rl.policy import distribution, kl_divergence, log_prob
from metagrad.rl.returns import discounted_returns, gae, normalize
from metagrad.rl.sampler import per_task
from metagrad.rl.trajectories import Trajectories


@dataclass(frozen=True)
class Batch:
    """Processed episodes for the losses: ``obs [tasks, trajs, T, obs]``,
    ``actions [tasks, trajs, T, act]``, normalised ``advantages`` and ``mask [tasks, trajs, T]``.
    """

    obs: Tensor
    actions: Tensor
    advantages: Tensor
    mask: Tensor

    def select(self, index: slice) -> Batch:
        return Batch(self.obs[index], self.actions[index], self.advantages[index], self.mask[index])

    def packed(self) -> Batch:
        """The same steps with each task's valid ones first: ``[tasks, 1, n, ...]``.

        ``n`` is the largest number of valid steps of a task; the losses (task means over the
        mask) are unchanged, up to the order of their sums. Episodes that end early (the ant
        falls) leave a third of the padded steps invalid; every pass of the TRPO step over the
        batch then skips most of them. Without padding the batch is returned as it is.
        """
        tasks = self.mask.shape[0]
        mask = self.mask.reshape(tasks, -1)  # [tasks, trajs * T]
        counts = mask.sum(1)
        n = int(counts.max())
        if n == mask.shape[1]:
            return self
        # Valid steps first, in their order (a stable sort of the mask, descending).
        index = torch.sort(mask, dim=1, descending=True, stable=True).indices[:, :n]

        def gather(x: Tensor) -> Tensor:
            flat = x.reshape(tasks, mask.shape[1], -1)
            out = flat.gather(1, index.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
            return out.reshape(tasks, 1, n, *x.shape[3:])

        return Batch(gather(self.obs), gather(self.actions), gather(self.advantages), gather(mask))


@dataclass(frozen=True)
class OldPolicy:
    """The pre-update adapted policy on the validation episodes (detached)."""

    mean: Tensor
    log_std: Tensor
    log_prob: Tensor

    def select(self, index: slice) -> OldPolicy:
        return OldPolicy(self.mean[index], self.log_std[index], self.log_prob[index])


def process(traj: Trajectories, gamma: float = 0.99, gae_lambda: float = 1.0) -> Batch:
    """Returns, per-task linear baseline, GAE and per-task normalised advantages."""
    returns = discounted_returns(traj.rewards, traj.mask, gamma)
    values = baseline.fit_predict(traj.obs, returns, traj.mask)
    advantages = gae(traj.rewards, values, traj.mask, gamma, gae_lambda)
    return Batch(traj.obs, traj.actions, normalize(advantages, traj.mask), traj.mask)


def _task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid steps of each task: ``[tasks, trajs, T] -> [tasks]``."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)


def reinforce_loss(policy: nn.Module, params: Params, batch: Batch) -> Tensor:
    """Sum over tasks of each task's mean ``-log pi(a|s) * A`` (per-task ``params``)."""
    mean, log_std = distribution(policy, params, batch.obs)
    logp = log_prob(mean, log_std, batch.actions)  # [tasks, trajs, T]
    return -_task_mean(logp * batch.advantages, batch.mask).sum()


def adapt_policy(
    policy: nn.Module,
    params: Params,
    batches: Sequence[Batch],
    inner_lr: LearningRate | Sequence[LearningRate],
    first_order: bool = False,
) -> Params:
    """Per-task parameters after one REINFORCE step on each of ``batches`` in turn.

    Args:
        policy: the policy module.
        params: meta-parameters (shared; expanded over tasks) or per-task parameters.
        batches: one processed batch per inner step, all with the same tasks.
        inner_lr: step size, or one per step.
        first_order: treat the inner gradients as constants.

    Returns:
        Per-task parameters ``[tasks, ...]``, differentiable w.r.t. ``params``.
    """
    lrs = lr_schedule(inner_lr, len(batches))
    if not batches:
        raise ValueError("adapt_policy needs at least one batch (one per inner step)")
    params = per_task(policy, params, batches[0].obs.shape[0])
    loss_fn = partial(reinforce_loss, policy)
    for batch, lr in zip(batches, lrs):
        params = adapt(loss_fn, params, batch, inner_lr=lr, inner_steps=1, first_order=first_order)
    return params


def old_policy(policy: nn.Module, adapted: Params, valid: Batch) -> OldPolicy:
    """The (detached) adapted policy's distribution and log-probabilities on ``valid``."""
    with torch.no_grad():
        mean, log_std = distribution(policy, detached(adapted), valid.obs)
        return OldPolicy(mean, log_std, log_prob(mean, log_std, valid.actions))


def surrogate_and_kl(
    policy: nn.Module, adapted: Params, valid: Batch, old: OldPolicy
) -> tuple[Tensor, Tensor]:
    """TRPO's surrogate loss and mean ``KL(old || new)`` on the validation episodes.

    Both are means over each task's valid steps, then over tasks.
    """
    mean, log_std = distribution(policy, adapted, valid.obs)
    ratio = torch.exp(log_prob(mean, log_std, valid.actions) - old.log_prob)
    loss = -_task_mean(ratio * valid.advantages, valid.mask).mean()
    kl = _task_mean(kl_divergence(old.mean, old.log_std, mean, log_std), valid.mask).mean()
    return loss, kl
