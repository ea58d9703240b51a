"""Conv4: the four-block CNN of the MAML, FOMAML and Reptile papers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metagrad.models import fold, kernels
from metagrad.models.layers import BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, norm_layer
from metagrad.types import STATISTICS_MASK, ExecutionPath


class ConvBlock(nn.Module):
    """3x3 convolution, BatchNorm, then a 2x2 max-pool (``pool="max"``) and ReLU.

    The max-pool runs before the ReLU (they commute), so the ReLU and its backward passes touch
    a tensor four times smaller.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str, pool: str) -> None:
        super().__init__()
        stride = 2 if pool == "stride" else 1
        self.conv = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm = norm_layer(norm, out_channels, spatial_dims=2)
        self.pool = MaxPool2d(2) if pool == "max" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.folds() and x.dim() == 4 and self.conv.weight.dim() == 4:  # one task's batch
            z = self._conv_batch_norm(x)  # [N, out_channels, H, W]
        else:
            z = self.norm(self.conv(x))  # [..., out_channels, H, W]
        return torch.relu(self.pool(z) if self.pool is not None else z)

    def folds(self) -> bool:
        """Whether convolution and BatchNorm run folded (:mod:`metagrad.models.fold`): a
        few-channel input (Omniglot's first block) and batch statistics of the whole batch."""
        norm = self.norm
        return (
            isinstance(norm, BatchNorm)
            and getattr(norm, STATISTICS_MASK) is None
            and fold.foldable(self.conv.weight)
        )

    def _conv_batch_norm(self, x: Tensor) -> Tensor:
        conv, norm = self.conv, self.norm
        return fold.conv_batch_norm(
            x,
            conv.weight,
            conv.bias,
            norm.weight,
            norm.bias,
            conv.stride[0],
            conv.padding[0],
            norm.eps,
        )

    def groupable(self) -> bool:
        """Whether :meth:`forward_grouped` applies: per-task convolution weights and a
        transductive BatchNorm without a statistics mask (or no normalisation)."""
        norm = self.norm
        ok_norm = isinstance(norm, nn.Identity) or (
            isinstance(norm, BatchNorm) and norm.groupable()
        )
        return self.conv.weight.dim() == 5 and ok_norm

    def forward_grouped(self, x: Tensor) -> Tensor:
        """Every task at once in the grouped layout: ``[N, tasks*C, H, W]`` with per-task
        parameters -> ``[N, tasks*out_channels, H', W']``."""
        conv = self.conv
        if self.folds():
            z = self._conv_batch_norm(x)
        else:
            z = kernels.grouped_conv2d(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0])
            if isinstance(self.norm, BatchNorm):
                z = self.norm.forward_grouped(z)
        if self.pool is not None:
            z = F.max_pool2d(z, 2)
        return torch.relu(z)


class Conv4(nn.Module):
    """Four blocks of [3x3 conv, BatchNorm, ReLU] and a linear head.

    ``pool="stride"`` is the MAML paper's Omniglot network (stride-2 convolutions, no
    pooling; features averaged over space, as its reference code); ``pool="max"`` is the
    max-pooling variant (miniImageNet in the papers, the peers' usual Omniglot model; features
    flattened).

    Args:
        ways: number of classes of the head.
        in_channels: 1 (Omniglot) or 3 (natural images).
        filters: channels of every block (64 Omniglot, 32 miniImageNet).
        image_size: input height = width, to size the head.
        pool: ``"stride"`` or ``"max"``.
        norm: BatchNorm policy (``"transductive"``, ``"running"``, ``"none"``).
        head: ``"mean"`` (average over space) or ``"flatten"``; default by ``pool`` as above.
    """

    def preferred_path(self, examples: int | None = None) -> ExecutionPath:
        """The path ``"auto"`` runs without measuring (evaluation), from the measurements of
        BENCHMARKS.md (one core; training measures its own, metagrad.algorithms.autotune):

        - strided Conv4, small tasks: all tasks at once (5-way 1-shot with 1 query, 10 images
          per task: 2x the loop; 20-way 1-shot, 40 images: 1.14x);
        - larger tasks (5-way 5-shot with 5 queries, 50 images: the loop is 2x faster) and the
          max-pool Conv4 (28x28 activations, where grouped convolutions lose): the loop.
        """
        small = examples is not None and examples <= 40
        return "vectorized" if self.pool_kind == "stride" and small else "loop"

    def __init__(
        self,
        ways: int,
        in_channels: int = 1,
        filters: int = 64,
        image_size: int = 28,
        pool: str = "stride",
        norm: str = "transductive",
        head: str | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("stride", "max"):
            raise ValueError(f"unknown pool {pool!r}: expected 'stride' or 'max'")
        head = head or ("mean" if pool == "stride" else "flatten")
        if head not in ("mean", "flatten"):
            raise ValueError(f"unknown head {head!r}: expected 'mean' or 'flatten'")
        blocks: list[nn.Module] = []
        channels = in_channels
        for _ in range(4):
            blocks.append(ConvBlock(channels, filters, norm, pool))
            channels = filters
        self.features = nn.Sequential(*blocks)
        self.head_kind, self.pool_kind = head, pool
        self.flatten = Flatten(3)
        with torch.no_grad():  # size the head from one dummy forward
            probe = self.features.eval()(torch.zeros(2, in_channels, image_size, image_size))
            self.features.train()
        size = probe.shape[1] if head == "mean" else probe[0].numel()
        self.head = Linear(size, ways)

    head_name = "head"  # metagrad.types.HeadedModule: what ANIL adapts alone

    def embed(self, x: Tensor) -> Tensor:
        """The features the head classifies: ``[..., C, H, W] -> [..., features]``.

        With per-task parameters and the grouped per-task convolution (the default kernel),
        the blocks run in the grouped layout ``[N, tasks*C, H, W]`` from the input to the
        features, so no layer transposes its activations.
        """
        if kernels.get_conv_impl() == "grouped" and all(b.groupable() for b in self.features):
            h = kernels.to_grouped(x)  # [tasks, N, C, H, W] -> [N, tasks*C, H, W]
            for block in self.features:
                h = block.forward_grouped(h)
            h = h.mean(dim=(-2, -1)) if self.head_kind == "mean" else h
            return kernels.from_grouped(h, x.shape[0])  # [tasks, N, features]
        h = self.features(x)  # [..., filters, h, w]
        return h.mean(dim=(-2, -1)) if self.head_kind == "mean" else self.flatten(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))
