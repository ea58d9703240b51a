"""Discounted returns, generalised advantage estimation and advantage normalisation, batched.

Every function takes tensors ``[..., T]`` (``[tasks, trajs, T]`` in the sampler's layout) and a
``mask [..., T]`` that is 1 for the steps that happened and 0 after an episode ended. An
episode's value after its last step is 0 (terminated or cut at the horizon alike), as in rllab.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(rewards: Tensor, mask: Tensor, other: Tensor | None = None) -> None:
    if rewards.shape != mask.shape or (other is not None and other.shape != rewards.shape):
        shapes = [tuple(rewards.shape), tuple(mask.shape)]
        if other is not None:
            shapes.append(tuple(other.shape))
        raise ValueError(f"rewards, mask (and values) must all be [..., T]; got shapes {shapes}")


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 0.99) -> Tensor:
    """``R_t = sum_{k >= t} gamma^(k - t) r_k`` over the steps of each episode: ``[..., T]``."""
    _check(rewards, mask)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 0.99, lam: float = 1.0
) -> Tensor:
    """Generalised advantage estimates (Schulman et al. 2016): ``[..., T]``.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` with ``V`` 0 after the last step;
    ``A_t = sum_k (gamma lam)^k delta_{t+k}``. With ``lam = 1`` (MAML's setting) this is the
    discounted return minus the baseline.
    """
    _check(rewards, mask, values)
    values = values * mask
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    deltas = (rewards + gamma * next_values - values) * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (deltas[..., t] + gamma * lam * running) * mask[..., t]
        out[..., t] = running
    return out


def normalize(advantages: Tensor, mask: Tensor, dims: int = 2, eps: float = 1e-8) -> Tensor:
    """Centre and scale advantages to mean 0, std 1 over the valid steps of each group.

    As rllab's ``center_adv`` (which MAML's code applies to each task's samples separately):
    ``(A - mean) / (std + eps)`` with the population standard deviation. Padded steps are 0.

    Args:
        advantages: ``[..., trajs, T]``.
        mask: same shape.
        dims: how many trailing dimensions form one group (2: all steps of all trajectories
            of a task, for ``[tasks, trajs, T]``).
        eps: added to the standard deviation.
    """
    _check(advantages, mask)
    reduce = tuple(range(-dims, 0))
    count = mask.sum(reduce, keepdim=True).clamp(min=1)
    mean = (advantages * mask).sum(reduce, keepdim=True) / count
    var = ((advantages - mean).pow(2) * mask).sum(reduce, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask
