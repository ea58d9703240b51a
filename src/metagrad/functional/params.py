"""Parameters as plain ``dict[str, Tensor]``: splitting a module's state, per-task copies.

A module's state splits three ways: *adaptable* parameters (``requires_grad=True``; the inner
loop changes them and the meta-gradient flows to them), *frozen* parameters
(``requires_grad=False``; used as they are) and *buffers* (e.g. BatchNorm running statistics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from metagrad.types import Params


@dataclass(frozen=True)
class ModuleState:
    """A module's tensors, split by role. Tied weights appear once, under their first name."""

    params: Params  # adaptable: requires_grad=True
    frozen: Params  # requires_grad=False parameters
    buffers: Params


def split_state(model: nn.Module) -> ModuleState:
    """Split ``model``'s parameters and buffers into adaptable, frozen and buffers.

    The tensors are the module's own (no copies), so the meta-gradient reaches
    ``model.parameters()`` and any ``torch.optim`` optimizer over them can step it.
    """
    params, frozen = {}, {}
    for name, p in model.named_parameters():  # remove_duplicate=True: tied weights once
        (params if p.requires_grad else frozen)[name] = p
    return ModuleState(params, frozen, dict(model.named_buffers()))


def expand_tasks(params: Mapping[str, Tensor], tasks: int) -> Params:
    """Per-task views ``[tasks, *shape]`` of shared parameters, without copying.

    Gradients taken with respect to the returned tensors are per task, and flow back to the
    shared tensors summed over tasks.
    """
    return {k: v.expand(tasks, *v.shape) for k, v in params.items()}


def detached(params: Mapping[str, Tensor]) -> Params:
    """Copies-free detached aliases (no graph to the originals)."""
    return {k: v.detach() for k, v in params.items()}


def zeros_like(params: Mapping[str, Tensor]) -> Params:
    """Zero tensors shaped like ``params``."""
    return {k: v.new_zeros(v.shape) for k, v in params.items()}
