"""Ordinary ``nn.Module`` layers whose forward also runs batched over tasks.

They hold their parameters under the usual names (``weight``, ``bias``), so state dicts match
``torch.nn``'s. Run per task with ``functional_call`` they behave exactly like their ``torch.nn``
counterparts; run with per-task parameters (a leading task dimension on every parameter and on
the input) they compute all tasks at once through :mod:`metagrad.models.kernels`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metagrad.models import kernels
from metagrad.types import STATISTICS_MASK


class Linear(nn.Linear):
    """``nn.Linear`` that accepts per-task weights ``[tasks, out, in]``."""

    def forward(self, x: Tensor) -> Tensor:
        return kernels.linear(x, self.weight, self.bias)


class Conv2d(nn.Conv2d):
    """Square-kernel ``nn.Conv2d`` (zero padding, no dilation/groups) with per-task weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, **kw) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kw)
        if self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros":
            raise ValueError("metagrad Conv2d supports groups=1, dilation=1, zero padding only")

    def forward(self, x: Tensor) -> Tensor:
        return kernels.conv2d(x, self.weight, self.bias, self.stride[0], self.padding[0])


class BatchNorm(nn.Module):
    """Batch normalisation on the statistics of the current batch, no running statistics.

    This is the papers' *transductive* policy: at meta-training and meta-test time alike, each
    task is normalised with the statistics of the examples it is given (the support set while
    adapting, the query set when predicting). It has no buffers, so it behaves the same in
    ``train()`` and ``eval()`` mode and is safe on every execution path.

    Which examples give the statistics can be chosen per call, functionally: the layer has an
    empty buffer slot :data:`~metagrad.types.STATISTICS_MASK`, and a bool ``[N]`` tensor passed
    under that name to ``functional_call`` restricts the statistics to the marked examples
    (:mod:`metagrad.algorithms.normalization`'s ``"support"`` mode). Empty, it is no buffer at
    all: not in ``state_dict()``, ``named_buffers()`` or checkpoints.

    Args:
        num_features: channels ``C``.
        spatial_dims: 0 for ``[N, C]`` inputs (MLPs), 2 for ``[N, C, H, W]`` (CNNs).
        affine: learn a per-channel scale and shift.
    """

    def __init__(
        self, num_features: int, spatial_dims: int = 2, eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__()
        self.num_features, self.spatial_dims, self.eps = num_features, spatial_dims, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer(STATISTICS_MASK, None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        mask = getattr(self, STATISTICS_MASK)
        return kernels.batch_norm(x, self.weight, self.bias, self.spatial_dims, self.eps, mask)

    def groupable(self) -> bool:
        """Whether :meth:`forward_grouped` applies: per-task (or no) affine weights, no mask."""
        per_task = self.weight is None or self.weight.dim() == 2
        return per_task and getattr(self, STATISTICS_MASK) is None and self.spatial_dims == 2

    def forward_grouped(self, x: Tensor) -> Tensor:
        """Every task at once in the grouped layout ``[N, tasks*C, H, W]`` (per-task weights
        ``[tasks, C]``), see :func:`metagrad.models.kernels.grouped_batch_norm`."""
        return kernels.grouped_batch_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, spatial_dims={self.spatial_dims}, transductive"


class MaxPool2d(nn.Module):
    """Max-pooling over the last two dimensions, any leading dimensions."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return kernels.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(nn.Module):
    """Flatten the last ``dims`` dimensions (``[..., C, H, W]`` -> ``[..., C*H*W]``)."""

    def __init__(self, dims: int = 3) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(-self.dims)


def norm_layer(policy: str, num_features: int, spatial_dims: int) -> nn.Module:
    """The normalisation layer for a BatchNorm policy.

    Args:
        policy: ``"transductive"`` (batch statistics at train and test time, the papers'
            setting; every execution path), ``"running"`` (``torch.nn`` BatchNorm with running
            statistics used in ``eval()`` mode; per-task loop path only, because the running
            buffers are updated in place), or ``"none"``.
    """
    if policy == "transductive":
        return BatchNorm(num_features, spatial_dims)
    if policy == "running":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm1d)(num_features)
    if policy == "none":
        return nn.Identity()
    raise ValueError(
        f"unknown BatchNorm policy {policy!r}: expected 'transductive', 'running' or 'none'"
    )
