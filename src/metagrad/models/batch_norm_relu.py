"""BatchNorm (batch statistics) + ReLU as one autograd node, to second order.

MAML's second-order meta-gradient differentiates the inner loop's backward pass, so every
layer's backward is itself differentiated. PyTorch's BatchNorm double backward is a composite
of some 50 elementwise passes over the activations; on the first Conv4 block of a 20-way
1-shot meta-batch (16 tasks x 20 images x 64 x 14 x 14) it touched 2.7 GB per inner step, and
was about a third of the iteration (BENCHMARKS.md, "Speed in the MAML paper's settings").
Here the backward is a node of its own whose backward (the double backward) is written out
by hand: a dozen passes. The formulas, per channel with ``M`` values and means over them
(``x̂ = (x - mean) r``, ``r = (var + eps)^-1/2``, ``z = γ x̂ + β``, ``y = relu(z)``):

- backward: ``gz = gy [z > 0]``, ``A = Σ gz``, ``B = Σ gz x̂``,
  ``gx = γ r (gz - A/M - x̂ B/M)``, ``gγ = B``, ``gβ = A``;
- its backward, given ``a, c, d`` for ``gx, gγ, gβ``: ``Q = Σ a gz - (A Σa + B Σ a x̂)/M``;
  ``∂/∂gy = [z > 0] (γ r (a - Σa/M - x̂ Σ a x̂ / M) + c x̂ + d)``; ``∂/∂γ = r Q``;
  ``∂/∂x = r (h - mean h - x̂ mean(h x̂)) - γ Q r² x̂ / M`` with
  ``h = c gz - γ r (gz Σ a x̂ + B a) / M`` (the gradient through ``x̂`` and ``r``).

A third derivative raises (``once_differentiable``). Exactness is held to ``F.batch_norm`` +
``relu`` in float64 by the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_DIMS = (0, 2, 3)  # statistics over examples and space, per channel of [N, C, H, W]


def batch_norm_relu(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """``relu(batch_norm(x))`` with batch statistics; ``x [N, C, H, W]``, ``weight/bias [C]``."""
    return _BatchNormReLU.apply(x, weight, bias, eps)


def _channel(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1)


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        var, mean = torch.var_mean(x, dim=_DIMS, keepdim=True, correction=0)
        rstd = torch.rsqrt(var + eps)
        xhat = (x - mean) * rstd
        y = torch.addcmul(_channel(bias), xhat, _channel(weight)).clamp_min_(0)
        ctx.save_for_backward(x, weight, xhat, rstd, y)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight, xhat, rstd, y = ctx.saved_tensors
        gx, gweight, gbias = _Backward.apply(gy, x, weight, xhat, rstd, y)
        return gx, gweight, gbias, None


class _Backward(torch.autograd.Function):
    """``(gy, x, weight) -> (gx, gweight, gbias)``; ``xhat, rstd, y`` ride along as constants
    computed from ``x`` (the gradient to ``x`` accounts for them)."""

    @staticmethod
    def forward(ctx, gy, x, weight, xhat, rstd, y):
        m = xhat[0, 0].numel() * xhat.shape[0]
        gz = torch.where(y > 0, gy, 0.0)
        a_sum = gz.sum(_DIMS, keepdim=True)  # A
        b_sum = (gz * xhat).sum(_DIMS, keepdim=True)  # B
        scale = _channel(weight) * rstd
        gx = (gz - torch.addcmul(a_sum / m, xhat, b_sum / m)) * scale
        ctx.save_for_backward(weight, xhat, rstd, y, gz, a_sum, b_sum)
        return gx, b_sum.view(-1), a_sum.view(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, a, c, d):
        weight, xhat, rstd, y, gz, a_sum, b_sum = ctx.saved_tensors
        m = xhat[0, 0].numel() * xhat.shape[0]
        c, d, g = _channel(c), _channel(d), _channel(weight)
        sa = a.sum(_DIMS, keepdim=True)
        saxh = (a * xhat).sum(_DIMS, keepdim=True)
        q = (a * gz).sum(_DIMS, keepdim=True) - (a_sum * sa + b_sum * saxh) / m
        gr = g * rstd
        # h = c gz - γ r (gz Σ a x̂ + B a) / M: the gradient to x̂ at fixed r.
        h = torch.addcmul(gz * (c - gr * saxh / m), a, gr * b_sum / m, value=-1)
        h_mean = h.mean(_DIMS, keepdim=True)
        hx_mean = (h * xhat).mean(_DIMS, keepdim=True)
        coef = hx_mean * rstd + g * q * rstd * rstd / m
        gx = torch.addcmul((h - h_mean) * rstd, xhat, coef, value=-1)
        ggz = torch.addcmul(torch.addcmul(d - gr * sa / m, xhat, c - gr * saxh / m), a, gr)
        ggy = torch.where(y > 0, ggz, 0.0)
        return ggy, gx, (rstd * q).view(-1), None, None, None
