"""The shared vocabulary of metagrad: the types every layer may import (this module imports
only torch and
:mod:`metagrad.errors`).

- :class:`TaskBatch` / :class:`Task`: a meta-batch of supervised tasks as tensors with a leading
  task dimension (every sampler yields one, every algorithm consumes one; keeping the task
  dimension explicit is what lets the vectorised path run all tasks at once).
- :data:`Params`: parameters as a plain ``dict[str, Tensor]``.
- :data:`Loss`: a per-task loss of outputs and targets; :data:`Objective`: a scalar loss of
  parameters on some data, what the inner loop differentiates.
- :data:`ExecutionPath` and :class:`TaskBatchedModule`: how the tasks of a meta-batch run, and
  what a model declares to run them all at once.
- :class:`HeadedModule`: what a model declares so that ``inner_params = "head"`` / ``"body"``
  (ANIL, BOIL) know its head, and ANIL can adapt the head on features computed once.
- :data:`STATISTICS_MASK`: the slot through which a caller tells metagrad's BatchNorm layers
  which examples of a batch give the statistics (the BatchNorm modes of
  :mod:`metagrad.algorithms.normalization`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from metagrad.errors import UsageError

Params = dict[str, Tensor]
Loss = Callable[[Tensor, Tensor], Tensor]  # loss(output, target) -> scalar, for one task
Objective = Callable[[Params, Any], Tensor]  # objective(params, data) -> scalar

# How the tasks of a meta-batch run (metagrad.algorithms.paths): "loop" one task at a time,
# "vectorized" all at once (a TaskBatchedModule natively, any other module through vmap),
# "vmap" through torch.func.vmap, "auto" the model's preferred path.
ExecutionPath = Literal["auto", "loop", "vectorized", "vmap"]
PATHS: tuple[ExecutionPath, ...] = ("auto", "loop", "vectorized", "vmap")

# The name of an empty (None) buffer of metagrad.models.BatchNorm. A caller that passes a bool
# tensor ``[N]`` under ``"<layer>.statistics_mask"`` to ``functional_call`` makes the layer
# normalise all N examples of the batch with the statistics of the examples marked True (the
# support set of ``[support; queries]``); None (the default) uses the whole batch. The name is
# here because the core (algorithms) sets it and the models read it, and neither imports the
# other.
STATISTICS_MASK = "statistics_mask"


@runtime_checkable
class TaskBatchedModule(Protocol):
    """What a model declares to run all tasks of a meta-batch natively, without ``vmap``.

    Its forward accepts per-task parameters (a leading task dimension on every parameter) with
    inputs ``[tasks, N, ...]``, and, with ordinary parameters, inputs with any leading
    dimensions. metagrad's built-in models (:mod:`metagrad.models`) are such modules.
    """

    def preferred_path(self, examples: int | None = None) -> ExecutionPath:
        """The path ``"auto"`` runs without measuring (evaluation, or measuring switched off:
        :mod:`metagrad.algorithms.autotune`) for tasks of ``examples`` support + query
        examples each (``None``: unknown): a rule from this model's measurements."""
        ...


@runtime_checkable
class HeadedModule(Protocol):
    """A model whose output is a head applied to features: ``forward(x) == head(embed(x))``.

    ``head_name`` is the qualified name of the head submodule (its parameters are
    ``f"{head_name}.weight"``, ...); everything else is the body. metagrad's built-in models
    are such modules: ``inner_params = "head"`` then adapts the head alone on the body's
    features, computed once per task (ANIL).
    """

    head_name: str

    def embed(self, x: Tensor) -> Tensor:
        """The body's features ``[..., F]`` of inputs ``x [..., *input_shape]``."""
        ...


@dataclass(frozen=True)
class Task:
    """One task: a support set to adapt on and a query set to evaluate on (no task dimension)."""

    support_x: Tensor  # [n_support, ...]
    support_y: Tensor  # [n_support, ...]
    query_x: Tensor  # [n_query, ...]
    query_y: Tensor  # [n_query, ...]


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch of tasks that share shapes.

    Attributes:
        support_x: ``[tasks, n_support, ...]`` inputs to adapt on (e.g. ``ways * shots`` images).
        support_y: ``[tasks, n_support, ...]`` targets of the support inputs.
        query_x: ``[tasks, n_query, ...]`` inputs the adapted model is evaluated on.
        query_y: ``[tasks, n_query, ...]`` targets of the query inputs.

    The constructor checks the shapes and dtypes and raises ``UsageError`` (a ``ValueError``)
    naming the problem.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def __post_init__(self) -> None:
        validate_task_batch(self)

    @property
    def num_tasks(self) -> int:
        """Number of tasks (the size of the leading dimension)."""
        return self.support_x.shape[0]

    def __len__(self) -> int:
        return self.num_tasks

    def task(self, index: int) -> Task:
        """The ``index``-th task, without the task dimension."""
        return Task(*(getattr(self, f.name)[index] for f in fields(self)))

    def __iter__(self) -> Iterator[Task]:
        return (self.task(i) for i in range(self.num_tasks))

    def chunks(self, size: int) -> Iterator[TaskBatch]:
        """Split into consecutive meta-batches of at most ``size`` tasks (views, no copies)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UsageError(f"chunk_size must be an integer >= 1, got {size!r}")
        for start in range(0, self.num_tasks, size):
            yield TaskBatch(*(getattr(self, f.name)[start : start + size] for f in fields(self)))

    def to(self, *args, **kwargs) -> TaskBatch:
        """Move or cast every tensor, as :meth:`torch.Tensor.to` (targets keep integer dtypes)."""
        moved = []
        for f in fields(self):
            t = getattr(self, f.name)
            if t.is_floating_point():
                moved.append(t.to(*args, **kwargs))
            else:  # never cast class labels to float; only move them
                device = kwargs.get("device") or next(
                    (a for a in args if isinstance(a, (str, torch.device))), None
                )
                moved.append(t.to(device) if device is not None else t)
        return TaskBatch(*moved)

    @classmethod
    def stack(cls, tasks: list[Task]) -> TaskBatch:
        """Stack single tasks of equal shapes into a meta-batch."""
        if not tasks:
            raise UsageError("cannot stack an empty list of tasks: give at least one Task")
        return cls(*(torch.stack([getattr(t, f.name) for t in tasks]) for f in fields(Task)))


def validate_task_batch(batch: TaskBatch) -> None:
    """Check the invariants of a :class:`TaskBatch`, raising ``UsageError`` with the fix."""
    for f in fields(batch):
        t = getattr(batch, f.name)
        if not isinstance(t, Tensor):
            raise UsageError(f"TaskBatch.{f.name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise UsageError(
                f"TaskBatch.{f.name} has shape {tuple(t.shape)}; expected [tasks, examples, ...]. "
                "For a single task, add the task dimension with .unsqueeze(0)."
            )
    tasks = {f.name: getattr(batch, f.name).shape[0] for f in fields(batch)}
    if len(set(tasks.values())) != 1:
        raise UsageError(
            f"mismatched task dimensions {tasks}: every tensor of a TaskBatch needs the same "
            "leading number of tasks"
        )
    if batch.support_x.shape[0] == 0:
        raise UsageError(
            "the TaskBatch has 0 tasks (support_x has shape "
            f"{tuple(batch.support_x.shape)}); a meta-batch needs at least one task"
        )
    for side in ("support", "query"):
        x, y = getattr(batch, f"{side}_x"), getattr(batch, f"{side}_y")
        if x.shape[1] != y.shape[1]:
            raise UsageError(
                f"{side}_x has {x.shape[1]} examples per task but {side}_y has {y.shape[1]}; "
                "inputs and targets must pair up one to one"
            )
        if not x.is_floating_point():
            raise UsageError(
                f"{side}_x has dtype {x.dtype}; models need floating inputs. Convert with "
                f"{side}_x.float() (images: scale uint8 to [0, 1] first)"
            )
    if batch.support_x.shape[1] == 0:
        raise UsageError(
            "the support set is empty (0 examples per task): adaptation needs at least one "
            "support example per task; check shots >= 1"
        )
    if batch.query_x.shape[1] and batch.support_x.shape[2:] != batch.query_x.shape[2:]:
        raise UsageError(
            f"support inputs are {tuple(batch.support_x.shape[2:])} but query inputs are "
            f"{tuple(batch.query_x.shape[2:])}; both sides of a task need the same input shape"
        )
