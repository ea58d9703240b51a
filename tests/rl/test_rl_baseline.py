"""rllab's linear feature baseline against a numpy least-squares reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metagrad.rl import baseline


def _numpy_reference(obs, returns, mask, reg=1e-5):
    """rllab's fit for one task: concatenate each trajectory's features (its valid steps)."""
    feats, targets = [], []
    for o, r, m in zip(obs, returns, mask):
        n = int(m.sum())
        o = np.clip(o[:n], -10, 10)
        al = np.arange(n).reshape(-1, 1) / 100.0
        feats.append(np.concatenate([o, o**2, al, al**2, al**3, np.ones((n, 1))], axis=1))
        targets.append(r[:n])
    x, y = np.concatenate(feats), np.concatenate(targets)
    return np.linalg.lstsq(x.T @ x + reg * np.eye(x.shape[1]), x.T @ y, rcond=None)[0]


def _data(tasks=3, trajs=4, steps=30, obs_dim=3):
    g = torch.Generator().manual_seed(0)
    obs = 4 * torch.randn(tasks, trajs, steps, obs_dim, generator=g)  # some beyond the clip
    returns = torch.randn(tasks, trajs, steps, generator=g).cumsum(-1)
    mask = torch.ones(tasks, trajs, steps)
    mask[0, 1, 20:] = 0  # early terminations
    mask[2, 3, 5:] = 0
    return obs * mask.unsqueeze(-1), returns * mask, mask


def test_fit_matches_numpy_least_squares_per_task():
    obs, returns, mask = _data()
    coeffs = baseline.fit(obs, returns, mask)
    for t in range(obs.shape[0]):
        ref = _numpy_reference(
            obs[t].double().numpy(), returns[t].double().numpy(), mask[t].numpy()
        )
        np.testing.assert_allclose(coeffs[t].numpy(), ref, rtol=1e-6, atol=1e-8)


def test_predict_is_features_times_coefficients_and_zero_when_padded():
    obs, returns, mask = _data()
    coeffs = baseline.fit(obs, returns, mask)
    values = baseline.predict(coeffs, obs, mask)
    feats = baseline.features(obs.double(), mask.double())
    torch.testing.assert_close(values, (feats @ coeffs[:, None, :, None]).squeeze(-1).float())
    assert (values[mask == 0] == 0).all()
    # The fit explains the returns better than their mean does.
    resid = ((values - returns) * mask).pow(2).sum()
    assert resid < ((returns - returns[mask.bool()].mean()) * mask).pow(2).sum()


def test_singular_system_is_regularised_and_unsolvable_one_teaches():
    obs, returns, mask = _data()
    obs = torch.zeros_like(obs)  # obs and obs^2 columns vanish: X^T X is singular
    coeffs = baseline.fit(obs, returns, mask)  # the ridge term makes it solvable
    assert torch.isfinite(coeffs).all()
    with pytest.raises(RuntimeError, match="singular for tasks"):
        baseline.fit(obs, returns, mask, reg_coeff=0.0)
