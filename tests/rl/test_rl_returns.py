"""Discounted returns, GAE and advantage normalisation against hand computations."""

from __future__ import annotations

import torch

from metagrad.rl.returns import discounted_returns, gae, normalize

# Two episodes of one task: the first ends after 3 steps (padded to 4), the second runs 4.
REWARDS = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]]], dtype=torch.float64)
MASK = torch.tensor([[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]], dtype=torch.float64)
VALUES = torch.tensor([[[1.0, 1.0, 2.0, 5.0], [0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)


def test_discounted_returns_by_hand_with_early_termination():
    got = discounted_returns(REWARDS, MASK, gamma=0.5)
    # R2 = 3, R1 = 2 + 0.5 * 3, R0 = 1 + 0.5 * 3.5; the padded step (reward 4) is ignored.
    expected = torch.tensor([[[2.75, 3.5, 3.0, 0.0], [1.875, 1.75, 1.5, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_gae_by_hand_with_early_termination():
    got = gae(REWARDS, VALUES, MASK, gamma=0.5, lam=0.5)
    # deltas of episode 1: 1 + .5*1 - 1 = .5, 2 + .5*2 - 1 = 2, 3 + .5*0 - 2 = 1 (the padded
    # value 5 is not bootstrapped); A2 = 1, A1 = 2 + .25 * 1, A0 = .5 + .25 * 2.25.
    # Episode 2 with V = 0: deltas = rewards, A_t = sum (0.25)^k r_{t+k}.
    expected = torch.tensor(
        [[[1.0625, 2.25, 1.0, 0.0], [1 + 0.25 + 0.0625 + 0.015625, 1.3125, 1.25, 1.0]]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected)


def test_gae_with_lambda_one_is_returns_minus_values():
    got = gae(REWARDS, VALUES, MASK, gamma=0.9, lam=1.0)
    expected = (discounted_returns(REWARDS, MASK, gamma=0.9) - VALUES) * MASK
    torch.testing.assert_close(got, expected)


def test_normalize_per_task_over_valid_steps():
    adv = torch.randn(3, 4, 5, dtype=torch.float64)
    mask = torch.ones(3, 4, 5, dtype=torch.float64)
    mask[0, 1, 2:] = 0
    mask[2, :, 4] = 0
    out = normalize(adv, mask)
    for t in range(3):
        valid = adv[t][mask[t].bool()]
        expected = (valid - valid.mean()) / (valid.std(unbiased=False) + 1e-8)
        torch.testing.assert_close(out[t][mask[t].bool()], expected)
    assert (out[mask == 0] == 0).all()
