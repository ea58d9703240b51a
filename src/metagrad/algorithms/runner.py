"""Execution paths: how a model runs on per-task parameters.

- ``"loop"``: one task at a time with :func:`torch.func.functional_call`; the plain reference
  every other path is held to, and the only one that allows buffers updated in place
  (BatchNorm running statistics).
- ``"vectorized"``: all tasks of a meta-batch at once. Built-in models (``task_batched = True``)
  run natively with per-task parameters through :mod:`metagrad.functional.kernels`; any other
  module runs under :func:`torch.func.vmap`.
- ``"vmap"``: force :func:`torch.func.vmap` even for built-in models.
- ``"auto"``: the model's ``preferred_path`` (the fastest correct path measured for it, a
  string or a function of the examples per task, e.g. :class:`metagrad.models.Conv4`'s), else
  ``"loop"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metagrad.functional.params import Params, expand_tasks, split_state
from metagrad.tasks.batch import TaskBatch

PATHS = ("auto", "loop", "vectorized", "vmap")


def has_running_stats(model: nn.Module) -> bool:
    """Whether a BatchNorm layer of ``model`` updates running statistics in place."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for m in model.modules()
    )


def resolve_path(model: nn.Module, path: str, examples: int | None = None) -> str:
    """The concrete path (``"loop"``, ``"native"`` or ``"vmap"``) for ``model``.

    Args:
        model: the model.
        path: one of :data:`PATHS`.
        examples: support + query examples per task, which ``"auto"`` may use (None: unknown).

    Raises:
        ValueError: unknown path, or a batched path asked for a model whose BatchNorm keeps
            running statistics (those buffers are updated in place, once per task, which a
            batched run cannot reproduce).
    """
    if path not in PATHS:
        raise ValueError(f"unknown execution path {path!r}: expected one of {PATHS}")
    running = has_running_stats(model)
    if path == "auto":
        preferred = getattr(model, "preferred_path", "loop")
        path = "loop" if running else preferred(examples) if callable(preferred) else preferred
    if path == "loop":
        return "loop"
    if running:
        raise ValueError(
            f"path={path!r} cannot run a model whose BatchNorm tracks running statistics: "
            "they are buffers updated in place task by task. Use path='loop', or the "
            "transductive policy (norm='transductive' for built-in models; "
            "track_running_stats=False for torch.nn BatchNorm)."
        )
    if path == "vectorized" and getattr(model, "task_batched", False):
        return "native"
    return "vmap"


@dataclass(frozen=True)
class TaskRunner:
    """A model bound to its frozen parameters, buffers and execution path.

    ``forward(params, x)`` runs one task (``x [N, ...]``) with plain parameters;
    ``batched(params, x)`` runs all tasks (``x [tasks, N, ...]``) with per-task parameters
    ``[tasks, ...]``.
    """

    model: nn.Module
    frozen: Params
    buffers: Params
    path: str  # "loop" | "native" | "vmap"

    @classmethod
    def create(
        cls, model: nn.Module, path: str = "auto", batch: TaskBatch | None = None
    ) -> TaskRunner:
        """Bind ``model``; ``batch`` (optional) lets ``"auto"`` choose by the tasks' sizes."""
        state = split_state(model)
        examples = None if batch is None else batch.support_x.shape[1] + batch.query_x.shape[1]
        return cls(model, state.frozen, state.buffers, resolve_path(model, path, examples))

    @property
    def vectorized(self) -> bool:
        return self.path != "loop"

    def forward(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.model, (params, self.frozen, self.buffers), (x,))

    def support_loss(self, loss, per_task: bool):
        """``f(params, (x, y)) -> scalar`` for :func:`metagrad.functional.adapt`: the loss of one
        task, or (``per_task``) the *sum* of the tasks' losses, so that each task's gradient is
        that of its own mean loss."""
        if per_task:
            return lambda p, data: task_losses(loss, self.batched(p, data[0]), data[1]).sum()
        return lambda p, data: loss(self.forward(p, data[0]), data[1])

    def batched(self, params: Params, x: Tensor) -> Tensor:
        tasks = x.shape[0]
        if self.path == "native":
            shared = expand_tasks({**self.frozen, **self.buffers}, tasks)
            return functional_call(self.model, (params, shared), (x,))
        return vmap(self.forward, in_dims=(0, 0), randomness="different")(params, x)


def check_batch(batch: TaskBatch) -> TaskBatch:
    """Accept a :class:`TaskBatch` (or anything with its four fields) and validate it."""
    if isinstance(batch, TaskBatch):
        return batch
    try:
        return TaskBatch(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    except AttributeError as e:
        raise TypeError(
            f"expected a metagrad TaskBatch (support_x, support_y, query_x, query_y), got "
            f"{type(batch).__name__}"
        ) from e


def task_losses(loss_fn, out: Tensor, y: Tensor) -> Tensor:
    """Per-task losses ``[tasks]`` of batched outputs ``[tasks, N, ...]``."""
    return vmap(loss_fn)(out, y)


def autocast_dtype(batch: TaskBatch, params: Params) -> TaskBatch:
    """Cast floating inputs to the parameters' dtype (float64 models take float32 data)."""
    dtype = next(iter(params.values())).dtype if params else torch.get_default_dtype()
    if batch.support_x.dtype == dtype:
        return batch
    return batch.to(dtype)
