"""Gaussian MLP policy (MAML §5.3: 2 x 100 ReLU, learned state-independent log-std).

The policy is an ordinary ``nn.Module`` built from :class:`metagrad.models.layers.Linear`, so
the same module runs

- per task, with plain parameters: ``obs [..., obs_dim]``;
- batched over tasks, with per-task parameters (a leading task dimension on every parameter,
  e.g. the adapted parameters of a meta-batch): ``obs [tasks, ..., obs_dim]``,

both through :func:`torch.func.functional_call` (:func:`distribution`). The distribution is
described by its ``(mean, log_std)`` tensors, and the functions below (log-probability, entropy,
KL) work on any batch shape, hence batched over tasks and trajectories alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metagrad.functional.params import Params
from metagrad.models.layers import Linear

LOG_2PI = math.log(2 * math.pi)


class GaussianMLPPolicy(nn.Module):
    """``obs -> mean`` MLP with ReLU hidden layers, plus a learned log-std vector.

    Initialisation as the reference code (rllab): Xavier-uniform weights, zero biases, standard
    deviation ``init_std`` (1.0). The log-std is clamped below at ``log(min_std)``.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer sizes, ``(100, 100)`` in the paper.
        init_std: initial standard deviation of every action dimension.
        min_std: lower bound on the standard deviation.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (100, 100),
        init_std: float = 1.0,
        min_std: float = 1e-6,
    ) -> None:
        super().__init__()
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [Linear(a, b), nn.ReLU()]
        layers.append(Linear(sizes[-1], act_dim))
        self.mean = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.obs_dim, self.act_dim, self.min_log_std = obs_dim, act_dim, math.log(min_std)
        for m in self.mean:
            if isinstance(m, Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def preferred_path(self, examples: int | None = None) -> str:
        """Batched over tasks natively (a :class:`metagrad.types.TaskBatchedModule`)."""
        return "vectorized"

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)``, both shaped ``[..., act_dim]`` like ``obs [..., obs_dim]``.

        With per-task parameters (``log_std [tasks, act_dim]``) ``obs`` is
        ``[tasks, ..., obs_dim]``.
        """
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"observations must end with obs_dim={self.obs_dim}, got shape {tuple(obs.shape)}"
            )
        log_std = self.log_std.clamp(min=self.min_log_std)
        if log_std.dim() == 1:
            mean = self.mean(obs)
            return mean, log_std.expand_as(mean)
        tasks = log_std.shape[0]
        if obs.dim() < 2 or obs.shape[0] != tasks:
            raise ValueError(
                f"per-task parameters for {tasks} tasks need observations [tasks={tasks}, ..., "
                f"obs_dim], got shape {tuple(obs.shape)}"
            )
        flat = obs.reshape(tasks, -1, self.obs_dim)  # [tasks, N, obs]
        mean = self.mean(flat).reshape(*obs.shape[:-1], self.act_dim)
        log_std = log_std.reshape(tasks, *[1] * (obs.dim() - 2), self.act_dim)
        return mean, log_std.expand_as(mean)


def distribution(policy: nn.Module, params: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
    """The policy's ``(mean, log_std)`` at ``obs`` with ``params`` (plain or per task)."""
    return functional_call(policy, params, (obs,), strict=False)


def sample(mean: Tensor, log_std: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw actions ``mean + std * noise`` (reproducible given ``generator``)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + log_std.exp() * noise


def log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """Log-density of ``actions [..., act]``, summed over action dimensions: ``[...]``."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)


def entropy(log_std: Tensor) -> Tensor:
    """Entropy of the diagonal Gaussian, summed over action dimensions: ``[...]``."""
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)


def kl_divergence(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """``KL(p || q)`` between diagonal Gaussians, summed over action dimensions: ``[...]``.

    TRPO constrains ``KL(old || new)``: pass the old (detached) distribution as ``p``.
    """
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    mahalanobis = ((mean_p - mean_q) * torch.exp(-log_std_q)).pow(2)
    return 0.5 * (var_ratio + mahalanobis - 1.0).sum(-1) + (log_std_q - log_std_p).sum(-1)
