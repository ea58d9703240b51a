"""A first convolution and its batch-statistics BatchNorm folded into one matrix product.

On a few-channel input (Omniglot's one grey channel: 3x3 patches of 9 values) a convolution is
``z = W p + b`` for the patch ``p`` at each position, so the BatchNorm statistics of ``z`` are
those of the patches mapped through ``W``: per output channel ``o``,

    mean_z[o] = W[o] . mean_p + b[o]        var_z[o] = W[o]^T cov_p W[o]

with ``mean_p`` and ``cov_p`` (9 and 9x9 numbers per task) the mean and biased covariance of the
patches over the batch and the positions. BatchNorm's output is then again one convolution,

    y = gamma (z - mean_z) / sqrt(var_z + eps) + beta = (s W) p + beta + s (b - mean_z),
    s = gamma / sqrt(var_z + eps),

so convolution and normalisation cost one matrix product and the 64-channel activation is
never normalised by elementwise passes. Exact algebra, not an approximation: float64 agrees
with convolution + BatchNorm to 1e-13 (tests/models/test_fold.py). Why by hand: PyTorch's
BatchNorm double backward, which every second-order inner step runs, makes about 170 passes
over that activation and was 42-47% of an inner step in the MAML paper's Omniglot settings
(BENCHMARKS.md, kernel table); folded, conv + BatchNorm + ReLU of the first block in the
pattern of one second-order step took 54 ms against 292 (16 tasks x 20 images), 166 against
1,571 (32 x 25) and 22 against 98 (32 x 5), one thread. With more input channels (RGB: 27
values a patch, 64 channels: 576) the patch covariance costs more than it saves: not folded.

The statistics are taken in full precision even under autocast (a bf16 covariance can round
to a negative variance).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metagrad.models.kernels import BMM_MAX_PATCH, grouped_patches


def foldable(weight: Tensor) -> bool:
    """Whether a convolution of ``weight`` (``[O, C, kh, kw]`` or per task ``[T, O, C, kh, kw]``)
    folds with its BatchNorm: patches of at most :data:`BMM_MAX_PATCH` values."""
    c, kh, kw = weight.shape[-3:]
    return c * kh * kw <= BMM_MAX_PATCH


def conv_batch_norm(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    bn_weight: Tensor | None,
    bn_bias: Tensor | None,
    stride: int,
    padding: int,
    eps: float = 1e-5,
) -> Tensor:
    """Convolution then BatchNorm on the current batch's statistics, per task, folded.

    Shapes (the grouped layout, one group per task): ``x [N, T*C, H, W]``, ``weight
    [T, O, C, kh, kw]``, ``bias``, ``bn_weight``, ``bn_bias`` ``[T, O]`` -> ``[N, T*O, H', W']``.
    A single task with shared parameters (``weight [O, C, kh, kw]``, the others ``[O]``) is
    ``T = 1``: ``x [N, C, H, W]`` -> ``[N, O, H', W']``. Equal to
    ``batch_norm(conv2d(x, weight, bias))`` with statistics over ``(N, H', W')`` per task.
    """
    if weight.dim() == 4:  # one task, shared parameters: T = 1
        weight, bias, bn_weight, bn_bias = (
            None if p is None else p.unsqueeze(0) for p in (weight, bias, bn_weight, bn_bias)
        )
    t, out = weight.shape[:2]
    cols, (oh, ow) = grouped_patches(x, weight, stride, padding)  # [N, T, P, L]
    patch = cols.shape[2]
    wf = weight.reshape(t, out, patch)  # [T, O, P]
    with torch.autocast(x.device.type, enabled=False):
        mean_p = cols.mean(dim=(0, 3))  # [T, P]
        centred = (cols - mean_p[:, :, None]).permute(1, 2, 0, 3).reshape(t, patch, -1)
        cov_p = centred @ centred.transpose(1, 2) / centred.shape[-1]  # [T, P, P]
        var_z = (wf @ cov_p * wf).sum(-1)  # [T, O]
        mean_z = (wf @ mean_p[..., None]).squeeze(-1)  # [T, O], without the conv bias
        scale = torch.rsqrt(var_z + eps)
        if bn_weight is not None:
            scale = bn_weight * scale
        # beta + s (b - mean_z) with mean_z = W mean_p + b: the conv bias cancels, so its
        # gradient is exactly 0, as through convolution + BatchNorm.
        shift = -scale * mean_z if bias is None else scale * (bias - (mean_z + bias))
        if bn_bias is not None:
            shift = shift + bn_bias
    y = torch.matmul((wf * scale[..., None]).unsqueeze(0), cols)  # [N, T, O, L]
    y = y + shift.reshape(1, t, out, 1)
    return y.reshape(x.shape[0], t * out, oh, ow)
