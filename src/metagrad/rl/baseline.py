"""rllab's linear feature baseline (Duan et al. 2016), fitted per task, batched over tasks.

Features of a step ``t`` with observation ``o`` (clipped to ``[-10, 10]``):
``[o, o^2, t/100, (t/100)^2, (t/100)^3, 1]``. The coefficients solve the ridge-regularised
normal equations ``(X^T X + c I) w = X^T R`` on the discounted returns ``R``, with ``c = 1e-5``;
as rllab, a failed solve (singular matrix or non-finite solution) is retried with ``c`` ten times
larger, up to 5 attempts. Solved in float64 for every task at once; padded steps (mask 0) add
nothing to the fit.

MAML's code keeps one baseline and fits it after processing each task, so each task's
advantages use the baseline fitted on the previously processed task's samples; pytorch-maml-rl
fits each task's baseline on that task's own samples before computing its advantages. We do the
latter (it is the estimator the paper describes), for all tasks in one batched solve.
"""

from __future__ import annotations

import torch
from torch import Tensor

OBS_CLIP = 10.0


def features(obs: Tensor, mask: Tensor) -> Tensor:
    """Baseline features ``[tasks, trajs, T, 2 * obs_dim + 4]`` (zero at padded steps)."""
    o = obs.clamp(-OBS_CLIP, OBS_CLIP)
    t = torch.arange(obs.shape[-2], dtype=obs.dtype, device=obs.device) / 100.0
    t = t.view(*[1] * (obs.dim() - 2), -1, 1).expand(*obs.shape[:-1], 1)
    feats = torch.cat([o, o * o, t, t**2, t**3, torch.ones_like(t)], -1)
    return feats * mask.unsqueeze(-1)


def fit(
    obs: Tensor, returns: Tensor, mask: Tensor, reg_coeff: float = 1e-5, attempts: int = 5
) -> Tensor:
    """Least-squares coefficients of each task's baseline: ``[tasks, 2 * obs_dim + 4]`` float64.

    Args:
        obs: ``[tasks, trajs, T, obs_dim]``.
        returns: discounted returns ``[tasks, trajs, T]`` (the regression targets).
        mask: ``[tasks, trajs, T]``.
        reg_coeff: initial ridge coefficient (multiplied by 10 after each failed solve).
        attempts: number of solves before giving up.

    Raises:
        RuntimeError: some task's system stays unsolvable at the largest regularisation.
    """
    tasks = obs.shape[0]
    x = features(obs.double(), mask.double()).reshape(tasks, -1, 2 * obs.shape[-1] + 4)
    y = (returns.double() * mask.double()).reshape(tasks, -1, 1)
    xtx, xty = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y  # [tasks, F, F], [tasks, F, 1]
    eye = torch.eye(xtx.shape[-1], dtype=torch.float64, device=xtx.device)
    coeffs = torch.zeros(tasks, xtx.shape[-1], dtype=torch.float64, device=xtx.device)
    todo = torch.arange(tasks, device=xtx.device)
    reg = reg_coeff
    for _ in range(attempts):
        sol, info = torch.linalg.solve_ex(xtx[todo] + reg * eye, xty[todo])
        ok = (info == 0) & torch.isfinite(sol).all(dim=(1, 2))
        coeffs[todo[ok]] = sol[ok].squeeze(-1)
        todo = todo[~ok]
        if todo.numel() == 0:
            return coeffs
        reg *= 10
    raise RuntimeError(
        f"the linear baseline's normal equations stay singular for tasks {todo.tolist()} even "
        f"with regularisation {reg / 10:g}: their observations or returns are probably not "
        "finite (check the environment's rewards and observations)"
    )


def predict(coeffs: Tensor, obs: Tensor, mask: Tensor) -> Tensor:
    """Baseline values ``[tasks, trajs, T]`` (0 at padded steps), in ``obs``'s dtype."""
    x = features(obs.double(), mask.double())  # [tasks, trajs, T, F]
    return torch.einsum("abtf,af->abt", x, coeffs).to(obs.dtype)


def fit_predict(obs: Tensor, returns: Tensor, mask: Tensor, reg_coeff: float = 1e-5) -> Tensor:
    """Fit each task's baseline on its own samples and return its values ``[tasks, trajs, T]``."""
    return predict(fit(obs, returns, mask, reg_coeff), obs, mask)
