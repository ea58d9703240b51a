"""ANIL's shortcut: adapt the head alone on the body's features, computed once per task.

When the inner loop adapts exactly the head of a :class:`~metagrad.types.HeadedModule`
(``inner_params = "head"``), the body is the same function at every inner step, so its
features of a support set are too: :class:`~metagrad.algorithms.paths.TaskExecutor` computes
them once (:func:`embed_all`, keeping their graph to the body's parameters) and runs every step
on the head alone. The meta-gradient is exactly that of running the whole model at every step
with the body's inner gradients masked (tested against a hand-unrolled float64 reference); any
other selection, or a model that does not name its head, runs the whole model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metagrad.functional.inner import InnerLoop
from metagrad.types import HeadedModule, Params


def head_only(model: nn.Module, params: Params, inner: InnerLoop) -> bool:
    """Whether ``inner`` adapts exactly the head of ``model`` (and nothing changes per step),
    so the body's features can be computed once per task and reused by every step.

    Not with ``inner.recompute``: a recomputed segment passes gradients to its inputs only, and
    the features would be its data, not an input; the whole model runs then, holding the body.
    """
    if not isinstance(model, HeadedModule) or inner.adapted is None or inner.per_step:
        return False
    if inner.recompute:
        return False
    prefix = model.head_name + "."
    head = {k for k in params if k.startswith(prefix)}
    return bool(head) and head == {k for k in params if k in inner.adapted}


def under(tensors: Mapping[str, Tensor], prefix: str) -> Params:
    """The entries of ``tensors`` under ``prefix``, named relative to it."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def renamed(lr, prefix: str):
    """Learning rates with their per-parameter names made relative to ``prefix``."""
    if isinstance(lr, Mapping):
        return under(lr, prefix)
    if isinstance(lr, (list, tuple)):
        return [renamed(r, prefix) for r in lr]
    return lr


class _Embed(nn.Module):
    """Runs ``model.embed``, so that :func:`functional_call` can call it with given tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.embed(x)


def embed_all(model: nn.Module, tensors: Params, x: Tensor, path: str) -> Tensor:
    """The features ``[tasks, N, F]`` that ``model.embed`` gives every task's inputs
    ``x [tasks, N, ...]``, with shared (task-independent) parameters and buffers ``tensors``.

    ``path`` as :class:`~metagrad.algorithms.paths.TaskExecutor`'s: ``"loop"`` task by task,
    ``"vectorized"`` all tasks at once (metagrad's layers take any leading dimensions with
    shared weights, and normalise each task with its own statistics), ``"vmap"``.
    """
    embed = _Embed(model)
    named = {f"model.{k}": v for k, v in tensors.items()}

    def one(xt: Tensor) -> Tensor:
        return functional_call(embed, named, (xt,))

    if path == "loop":
        return torch.stack([one(xt) for xt in x])
    if path == "vectorized":
        return one(x)
    return vmap(one, randomness="different")(x)
