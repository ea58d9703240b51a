"""The three BatchNorm modes of prediction: whose statistics normalise a query example.

A model whose BatchNorm uses batch statistics (the papers' policy, the built-in models'
``norm="transductive"``) keeps no statistics of its own: everything it predicts is normalised
with the statistics of some batch, and which batch is a choice:

- ``"transductive"``: the query batch itself, the papers' protocol (``metagrad test``'s and
  ``MAML.predict``'s default). A query's answer depends on the other queries, and one image
  alone is normalised with its own statistics, which erases it (near-uniform outputs).
- ``"non-transductive"``: the support set plus that one query (Nichol et al., 2018, the Reptile
  paper's second protocol; ``eval.transductive = false``): one forward pass of the support set
  per query.
- ``"support"``: the support set alone (``Adapted.predict``'s and ``metagrad adapt``'s
  default). One forward pass of ``[support; queries]`` whose BatchNorm layers take their
  statistics from the support part only: an image's answer is the same alone or in any batch,
  and the support set is normalised exactly as while adapting.

A model without batch statistics (no BatchNorm, or ``torch.nn`` BatchNorm with running
statistics in ``eval()`` mode) answers the same in every mode. The modes are implemented
functionally: the ``"support"`` mode passes a mask under the BatchNorm layers'
:data:`~metagrad.types.STATISTICS_MASK` slot to ``functional_call``; nothing is set on the
model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor, nn

from metagrad.algorithms.paths import TaskExecutor, has_running_stats, uses_batch_statistics
from metagrad.errors import UsageError
from metagrad.types import STATISTICS_MASK, Params, TaskBatchedModule

BatchNormMode = Literal["transductive", "non-transductive", "support"]
BATCH_NORM_MODES: tuple[BatchNormMode, ...] = ("transductive", "non-transductive", "support")


def check_mode(mode: object) -> BatchNormMode:
    """``mode`` if it is one of :data:`BATCH_NORM_MODES`.

    Raises:
        UsageError: any other value, listing the modes.
    """
    if mode not in BATCH_NORM_MODES:
        raise UsageError(
            f"unknown BatchNorm mode {mode!r}: expected one of {list(BATCH_NORM_MODES)} (the "
            "query batch's statistics, the support set plus each query, the support set alone)"
        )
    return mode  # type: ignore[return-value]


def predict_with(
    executor: TaskExecutor,
    params: Params,
    x: Tensor,
    mode: BatchNormMode = "transductive",
    support_x: Tensor | None = None,
) -> Tensor:
    """One task's outputs on ``x [N, ...]`` with ordinary ``params``, normalised as ``mode``
    says (see the module docstring).

    Args:
        executor: the model, its frozen parameters and buffers.
        params: the (adapted) parameters.
        x: the examples to predict.
        mode: one of :data:`BATCH_NORM_MODES`.
        support_x: the task's support set ``[n_support, ...]``; needed by every mode but
            ``"transductive"``.

    Raises:
        UsageError: an unknown mode, no support set for a mode that needs one, or the
            ``"support"`` mode for a ``torch.nn`` BatchNorm that computes batch statistics
            (only metagrad's BatchNorm can take them from part of a batch).
    """
    check_mode(mode)
    if mode == "transductive" or not uses_batch_statistics(executor.model):
        return executor.forward(params, x)
    if support_x is None:
        raise UsageError(
            f"batch_norm={mode!r} normalises with the support set's statistics: give the "
            "task's support_x (or batch_norm='transductive')"
        )
    if mode == "non-transductive":
        return _one_query_at_a_time(executor, params, x, support_x)
    n = support_x.shape[0]
    mask = torch.zeros(n + x.shape[0], dtype=torch.bool, device=x.device)
    mask[:n] = True  # the support part gives the statistics; the queries only receive them
    masks = {slot: mask for slot in mask_slots(executor.model)}
    masked = replace(executor, buffers={**executor.buffers, **masks})
    return masked.forward(params, torch.cat([support_x, x]))[n:]


def mask_slots(model: nn.Module) -> list[str]:
    """The names under which ``functional_call`` takes each BatchNorm layer's statistics mask.

    Raises:
        UsageError: a ``torch.nn`` BatchNorm computes batch statistics (it has no such slot).
    """
    slots, other = [], []
    for name, m in model.named_modules():
        if hasattr(m, STATISTICS_MASK):
            slots.append(f"{name}.{STATISTICS_MASK}" if name else STATISTICS_MASK)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.training or not m.track_running_stats
        ):
            other.append(name or type(m).__name__)
    if other:
        raise UsageError(
            f"batch_norm='support' needs metagrad.models.BatchNorm layers, but {other[0]} is a "
            "torch.nn BatchNorm computing batch statistics; use batch_norm='non-transductive', "
            "or build the model with metagrad.models.BatchNorm (norm='transductive')"
        )
    return slots


def _one_query_at_a_time(
    executor: TaskExecutor, params: Params, x: Tensor, support_x: Tensor
) -> Tensor:
    """Each example of ``x`` normalised in a batch of the support set and itself alone."""
    # [n_query, n_support + 1, ...]: every query joins its own copy of the support set.
    groups = torch.cat([support_x.expand(x.shape[0], *support_x.shape), x.unsqueeze(1)], dim=1)
    model = executor.model
    if isinstance(model, TaskBatchedModule) and not has_running_stats(model):
        return executor.forward(params, groups)[:, -1]  # any leading dims: all groups at once
    return torch.stack([executor.forward(params, g)[-1] for g in groups])
