"""Execution paths: how the tasks of a meta-batch run, chosen in this one place.

The vocabulary (:data:`metagrad.types.ExecutionPath`), from config to kernel:

- ``"loop"``: one task at a time with :func:`torch.func.functional_call`; the plain reference
  every other path is held to, and the only one that allows buffers updated in place
  (BatchNorm running statistics).
- ``"vectorized"``: all tasks of a meta-batch at once. A
  :class:`~metagrad.types.TaskBatchedModule` (the built-in models) runs natively with
  per-task parameters through :mod:`metagrad.models.kernels`; any other module runs under
  :func:`torch.func.vmap`, i.e. ``"vectorized"`` resolves to ``"vmap"`` for it.
- ``"vmap"``: :func:`torch.func.vmap` even for built-in models.
- ``"auto"``: in training, measured on the first step of each task shape
  (:mod:`metagrad.algorithms.autotune`, through
  :meth:`~metagrad.algorithms.MetaLearner.plan_for`); here, and so in evaluation, the model's
  rule ``preferred_path(examples)``, else ``"loop"``.

:class:`TaskExecutor` binds a model to its resolved path and offers what the algorithms need,
for every path alike: :meth:`~TaskExecutor.adapt_all`, :meth:`~TaskExecutor.trajectory_all`,
:meth:`~TaskExecutor.predict_all` and :meth:`~TaskExecutor.task_losses`. Per-task parameters always
carry a leading task dimension ``[tasks, ...]``; MAML, Reptile, the baselines and the
evaluation never branch on the path.

When the inner loop adapts exactly the head of a :class:`~metagrad.types.HeadedModule` (ANIL),
:meth:`~TaskExecutor.adapt_all` computes the body's features of each support set once and runs
every step on the head alone (:mod:`metagrad.algorithms.head_only`); any other selection runs the
whole model at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metagrad.algorithms.head_only import embed_all, head_only, renamed, under
from metagrad.checks import UNUSED, check_loss_value, loss_shape_problem
from metagrad.errors import UsageError
from metagrad.functional.inner import InnerLoop, prepare, run_inner, trajectory
from metagrad.functional.params import expand_tasks, split_state
from metagrad.types import PATHS, Loss, Objective, Params, TaskBatch, TaskBatchedModule

Resolved = Literal["loop", "vectorized", "vmap"]
Pick = Callable[[int], Tensor] | None  # step -> indices of the support examples it uses


def has_running_stats(model: nn.Module) -> bool:
    """Whether a BatchNorm layer of ``model`` updates running statistics in place."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for m in model.modules()
    )


def resolve_path(model: nn.Module, path: str, examples: int | None = None) -> Resolved:
    """The concrete path (``"loop"``, ``"vectorized"`` natively, or ``"vmap"``) for ``model``.

    Args:
        model: the model.
        path: one of :data:`metagrad.types.PATHS`.
        examples: support + query examples per task, which ``"auto"`` may use (None: unknown).

    Raises:
        ValueError: unknown path, or a batched path asked for a model whose BatchNorm keeps
            running statistics (those buffers are updated in place, once per task, which a
            batched run cannot reproduce).
    """
    if path not in PATHS:
        raise ValueError(f"unknown execution path {path!r}: expected one of {PATHS}")
    running = has_running_stats(model)
    native = isinstance(model, TaskBatchedModule)
    if path == "auto":
        path = "loop" if running or not native else model.preferred_path(examples)
    if path == "loop":
        return "loop"
    if running:
        raise ValueError(
            f"path={path!r} cannot run a model whose BatchNorm tracks running statistics: "
            "they are buffers updated in place task by task. Use path='loop', or the "
            "transductive policy (norm='transductive' for built-in models; "
            "track_running_stats=False for torch.nn BatchNorm)."
        )
    return "vectorized" if path == "vectorized" and native else "vmap"


@dataclass(frozen=True)
class TaskExecutor:
    """A model bound to its frozen parameters, buffers and resolved execution path."""

    model: nn.Module
    frozen: Params
    buffers: Params
    path: Resolved

    @classmethod
    def create(
        cls, model: nn.Module, path: str = "auto", batch: TaskBatch | None = None
    ) -> TaskExecutor:
        """Bind ``model``; ``batch`` (optional) lets ``"auto"`` choose by the tasks' sizes."""
        state = split_state(model)
        examples = None if batch is None else batch.support_x.shape[1] + batch.query_x.shape[1]
        return cls(model, state.frozen, state.buffers, resolve_path(model, path, examples))

    def with_copied_buffers(self) -> TaskExecutor:
        """This executor on copies of the model's buffers: what it runs never touches the
        module, not even BatchNorm's running statistics in ``train()`` mode."""
        return replace(self, buffers={k: v.clone() for k, v in self.buffers.items()})

    def backprop_chunk(self, chunk_size: int | None) -> int | None:
        """Tasks per backward pass: ``chunk_size`` when batched (None: the whole meta-batch);
        the loop backpropagates task by task, so its memory never grows with the meta-batch."""
        return 1 if self.path == "loop" else chunk_size

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """One task: ``x [N, ...]`` with ordinary parameters (which may also override frozen
        parameters and buffers: MAML++'s per-step BatchNorm)."""
        with _input_shape_errors(self.model, x, 1):
            return functional_call(self.model, {**self.frozen, **self.buffers, **params}, (x,))

    def predict_all(self, params: Params, x: Tensor) -> Tensor:
        """Every task: ``x [tasks, N, ...]`` with per-task ``params [tasks, ...]``."""
        if self.path == "loop":
            return torch.stack([self.forward(_task(params, t), xt) for t, xt in enumerate(x)])
        with _input_shape_errors(self.model, x, 2):
            if self.path == "vectorized":
                shared = expand_tasks({**self.frozen, **self.buffers}, x.shape[0])
                return functional_call(self.model, {**shared, **params}, (x,))
            return vmap(self.forward, in_dims=(0, 0), randomness="different")(params, x)

    def task_losses(self, loss: Loss, out: Tensor, y: Tensor) -> Tensor:
        """Per-task losses ``[tasks]`` of outputs ``[tasks, N, ...]``."""
        if self.path == "loop":  # a user's loss need not be vmap-able on the reference path
            return torch.stack([_scalar(loss(o, t)) for o, t in zip(out, y)])
        return task_losses(loss, out, y)

    def adapt_all(
        self,
        loss: Loss,
        params: Params,
        x: Tensor,
        y: Tensor,
        inner: InnerLoop,
        pick: Pick = None,
        offset: Params | None = None,
    ) -> tuple[Params, dict]:
        """Adapt the shared ``params`` to every task's support set ``x [tasks, N, ...]``.

        Args:
            loss: per-task loss.
            params: the shared starting parameters (no task dimension).
            x, y: the support sets.
            inner: the inner loop.
            pick: the support examples each step uses (Reptile's mini-batches); None: all.
            offset: if given, the model runs at ``offset + params`` (Reptile adapts the
                displacement from ``theta``, which keeps its small direction exact).

        Returns:
            Per-task adapted parameters ``[tasks, ...]`` and the inner optimiser's final state
            per task (moments ``[tasks, ...]``).
        """
        if offset is None and head_only(self.model, params, inner):
            return self._adapt_head(loss, params, x, y, inner, pick)
        if self.path != "loop":
            per_task = expand_tasks(params, x.shape[0])
            objective = self._objective(loss, offset, batched=True)
            steps = _steps(x, y, pick, slice(None))
            return run_inner(objective, per_task, (x, y), _per_task(inner, x.shape[0]), steps)
        objective = self._objective(loss, offset, batched=False)
        ends = [
            run_inner(objective, params, (x[t], y[t]), inner, _steps(x[t], y[t], pick, ...))
            for t in range(x.shape[0])
        ]
        return _stack([p for p, _ in ends]), _stack_state([s for _, s in ends])

    def trajectory_all(
        self, loss: Loss, params: Params, x: Tensor, y: Tensor, inner: InnerLoop, pick: Pick = None
    ) -> Iterator[Params]:
        """:meth:`adapt_all`'s per-task parameters ``[tasks, ...]`` after each inner step."""
        if head_only(self.model, params, inner):
            return self._adapt_head(loss, params, x, y, inner, pick, stream=True)
        if self.path != "loop":
            objective = self._objective(loss, None, batched=True)
            steps = _steps(x, y, pick, slice(None))
            per_task = expand_tasks(params, x.shape[0])
            inner = _per_task(inner, x.shape[0])
            return (p for p, _ in trajectory(objective, per_task, (x, y), inner, steps))
        objective = self._objective(loss, None, batched=False)
        streams = [
            trajectory(objective, params, (x[t], y[t]), inner, _steps(x[t], y[t], pick, ...))
            for t in range(x.shape[0])
        ]
        return (_stack([p for p, _ in step]) for step in zip(*streams))

    def _adapt_head(
        self,
        loss: Loss,
        params: Params,
        x: Tensor,
        y: Tensor,
        inner: InnerLoop,
        pick: Pick,
        stream: bool = False,
    ):
        """:meth:`adapt_all` (or, ``stream``, :meth:`trajectory_all`) of the head alone on the
        body's features of every support set, computed once
        (:mod:`metagrad.algorithms.head_only`)."""
        name = self.model.head_name
        prefix = name + "."
        body = {k: v for k, v in params.items() if not k.startswith(prefix)}
        with _input_shape_errors(self.model, x, 2):
            shared = {**self.frozen, **self.buffers, **body}
            features = embed_all(self.model, shared, x, self.path)  # [tasks, N, F]
        sub = TaskExecutor(
            self.model.get_submodule(name),
            under(self.frozen, prefix),
            under(self.buffers, prefix),
            self.path,
        )
        inner = replace(inner, adapted=None, inner_lr=renamed(inner.inner_lr, prefix))
        held = expand_tasks(body, x.shape[0])

        def whole(phi: Params) -> Params:
            return {**held, **{prefix + k: v for k, v in phi.items()}}

        head = under(params, prefix)
        if stream:
            return (whole(phi) for phi in sub.trajectory_all(loss, head, features, y, inner, pick))
        phi, state = sub.adapt_all(loss, head, features, y, inner, pick)
        return whole(phi), state

    def task_objective(self, loss: Loss) -> Objective:
        """``objective(params, (x, y))``: one task's loss with ordinary parameters."""
        return self._objective(loss, None, batched=False)

    def _objective(self, loss: Loss, offset: Params | None, batched: bool) -> Objective:
        """``objective(params, (x, y))``: one task's loss, or (batched) the *sum* of the tasks'
        losses, so that each task's gradient is that of its own mean loss."""

        def objective(params: Params, data: tuple[Tensor, Tensor]) -> Tensor:
            if offset is not None:
                params = {k: offset[k] + params[k] for k in offset}
            if batched:
                return task_losses(loss, self.predict_all(params, data[0]), data[1]).sum()
            return _scalar(loss(self.forward(params, data[0]), data[1]))

        return objective


def _per_task(inner: InnerLoop, tasks: int) -> InnerLoop:
    """``inner`` with its per-step tensors given a leading task dimension (batched paths)."""
    if not inner.per_step:
        return inner
    return replace(inner, per_step=tuple(expand_tasks(d, tasks) for d in inner.per_step))


def _steps(x: Tensor, y: Tensor, pick: Pick, tasks) -> Callable[[int], tuple] | None:
    """Each step's support data under ``pick`` (``tasks``: ``slice(None)`` keeps a task
    dimension, ``...`` has none)."""
    if pick is None:
        return None
    if tasks is ...:
        return lambda step: (x[pick(step)], y[pick(step)])
    return lambda step: (x[:, pick(step)], y[:, pick(step)])


def _task(params: Params, t: int) -> Params:
    return {k: v[t] for k, v in params.items()}


def _stack(per_task: list[Params]) -> Params:
    return {k: torch.stack([p[k] for p in per_task]) for k in per_task[0]}


def _stack_state(per_task: list[dict]) -> dict:
    return {g: _stack([s[g] for s in per_task]) if per_task[0][g] else {} for g in per_task[0]}


def task_losses(loss_fn: Loss, out: Tensor, y: Tensor) -> Tensor:
    """Per-task losses ``[tasks]`` of batched outputs ``[tasks, N, ...]``.

    Raises:
        UsageError: the loss is not a scalar per task (summed, it would give a meta-gradient
            matching neither the mean nor the sum; the loop path refuses it with these words).
    """
    losses = vmap(loss_fn)(out, y)
    if (problem := loss_shape_problem(losses.shape[1:])) is not None:
        raise UsageError(problem)
    return losses


def _scalar(loss: Tensor) -> Tensor:
    check_loss_value(loss)
    return loss


def probe(executor: TaskExecutor, loss: Loss, params: Params, x: Tensor, y: Tensor) -> set[str]:
    """The names of the parameters ``loss`` uses on one task's data ``x [N, ...]``, checking on
    the way what would otherwise fail deep inside autograd or the model.

    Runs on copies of the buffers and restores the random state, so it changes nothing a
    training run computes (resumes stay exact).

    Raises:
        UsageError: the model cannot take inputs shaped like ``x`` (names both shapes), the
            loss is not a scalar, or it depends on none of ``params``.
    """
    executor = executor.with_copied_buffers()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        p = prepare(params)
        out = executor.forward(p, x)
        value = _scalar(loss(out, y))
        if not value.requires_grad:
            used: set[str] = set()
        else:
            grads = torch.autograd.grad(value, list(p.values()), allow_unused=True)
            used = {k for k, g in zip(p, grads) if g is not None}
    if not used:
        raise UsageError(f"the loss {UNUSED}")
    return used


# Words of torch's errors for operands whose shapes do not fit (matmul, conv, broadcasting).
_SHAPE_WORDS = ("shape", "size", "channels", "dimension", "expected input")


@contextmanager
def _input_shape_errors(model: nn.Module, x: Tensor, lead: int) -> Iterator[None]:
    """Turn torch's shape error from the model into one line naming the batch's input shape
    and the model's (any other error, out of memory included, passes unchanged)."""
    try:
        yield
    except RuntimeError as e:
        text = str(e).strip()
        if "out of memory" in text or not any(w in text.lower() for w in _SHAPE_WORDS):
            raise
        first = text.splitlines()[0] if text else type(e).__name__
        raise UsageError(
            f"the model cannot take the batch's inputs: each example has shape "
            f"{tuple(x.shape[lead:])}, but {_expects(model)} (torch: {first}); make the task's "
            "inputs and the model's input size agree"
        ) from e


def _expects(model: nn.Module) -> str:
    """What the model's first layer takes, as far as it says."""
    for m in model.modules():
        if isinstance(getattr(m, "in_features", None), int):
            return f"its first layer ({type(m).__name__}) takes {m.in_features} features"
        if isinstance(getattr(m, "in_channels", None), int):
            return f"its first layer ({type(m).__name__}) takes {m.in_channels} channels"
    return "the model rejects that shape"


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether some layer normalises with the current batch's statistics (transductive)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training or not m.track_running_stats:
                return True
        elif type(m).__name__ == "BatchNorm":  # metagrad.models' transductive BatchNorm
            return True
    return False


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


def autocast_dtype(batch: TaskBatch, params: Params) -> TaskBatch:
    """Cast floating inputs to the parameters' dtype (float64 models take float32 data)."""
    dtype = next(iter(params.values())).dtype if params else torch.get_default_dtype()
    if batch.support_x.dtype == dtype:
        return batch
    return batch.to(dtype)
