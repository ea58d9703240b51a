"""The thin stateful shell: meta-learners bound to a model, driven by any ``torch.optim``.

``backward(batch)`` writes the meta-gradient (MAML and its family, FOMAML) or the Reptile
direction into ``.grad`` of the meta-parameters (accumulating, like ``loss.backward()``), so a
training step is::

    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    opt.zero_grad(); learner.backward(batch); opt.step()

``learner.parameters()`` is the model's parameters, then what the learner learns itself
(learnable inner learning rates, MAML++'s per-step BatchNorm weights); ``state_dict()`` keeps the
latter and the schedules' position, so checkpoints hold them with the model's weights.
``adapt`` and ``predict`` serve meta-testing and deployment. Nothing here changes the module
except ``.grad``; the adapted parameters are returned as a dict.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metagrad.algorithms.autotune import (
    DEFAULT_BUDGET,
    Autotuner,
    Plan,
    measured_plan,
    measuring,
    plan_key,
)
from metagrad.algorithms.maml import (
    MetaOutput,
)
from metagrad.algorithms.normalization import BatchNormMode, predict_with
from metagrad.algorithms.paths import (
    TaskExecutor,
    resolve_path,
    uses_batch_statistics,
)
from metagrad.algorithms.per_step import copy_into
from metagrad.algorithms.rates import learnable_rates
from metagrad.algorithms.selection import InnerParams, adapted_names
from metagrad.checks import budget_problem, count_problem, lr_problem, require
from metagrad.errors import UsageError
from metagrad.functional.inner import InnerLoop, check_rate_names, run_inner
from metagrad.functional.optim import LearningRate
from metagrad.functional.params import detached, split_state
from metagrad.types import Loss, Params, TaskBatch


def accumulate_grad(params: Params, grads: Params) -> None:
    """Add ``grads`` into ``.grad`` of the corresponding parameters."""
    for k, g in grads.items():
        p = params[k]
        p.grad = g.detach().clone() if p.grad is None else p.grad + g.detach()


class MetaLearner:
    """Common shell of the meta-learning algorithms.

    Args:
        model: any ``nn.Module``; parameters with ``requires_grad=False`` are not adapted.
        loss: per-task loss ``loss(output, target) -> scalar`` (default cross-entropy).
        inner_lr: inner learning rate (a finite number > 0, or a tensor: learnable, its
            ``.grad`` accumulates in :meth:`backward`), one per parameter (``{name: rate}``, as
            Meta-SGD), or a list of those, one per inner step.
        inner_steps: inner steps during meta-training.
        path: ``"auto"``, ``"loop"``, ``"vectorized"`` or ``"vmap"``
            (see :mod:`metagrad.algorithms.paths`). ``"auto"`` measures the paths on the first
            training step of each task shape and keeps the fastest that fits ``memory_budget``
            (:mod:`metagrad.algorithms.autotune`); evaluation runs the model's rule.
        chunk_size: tasks per backward pass on the vectorised path (bounds memory); the loop
            path always backpropagates task by task. With ``"auto"``, the chunk sizes it
            tries (None: the whole meta-batch, 16 and 8).
        memory_budget: the most working memory ``"auto"`` may choose: a fraction (0, 1] of
            the memory available when it decides, or bytes (> 1).
        inner_params: which parameters the inner loop adapts, the others being held as they
            are (and still meta-trained): ``"all"`` (default), ``"head"`` (ANIL), ``"body"``
            (BOIL), glob patterns of parameter names, or a predicate ``name -> bool``
            (:mod:`metagrad.algorithms.selection`).

    Raises:
        UsageError: a bad argument, by the rules of :mod:`metagrad.checks` (the config's).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss = F.cross_entropy,
        *,
        inner_lr: LearningRate | Sequence[LearningRate],
        inner_steps: int = 1,
        path: str = "auto",
        chunk_size: int | None = None,
        inner_params: InnerParams = None,
        memory_budget: float = DEFAULT_BUDGET,
    ) -> None:
        # The rules of metagrad.checks, as the config's: the same words on both sides.
        require("inner_lr", lr_problem(inner_lr))
        require("inner_steps", count_problem(inner_steps, 1))
        require("chunk_size", count_problem(chunk_size, 1, optional=True))
        require("memory_budget", budget_problem(memory_budget))
        if not any(p.requires_grad for p in model.parameters()):
            raise UsageError(
                f"the model ({type(model).__name__}) has no parameters with requires_grad=True: "
                "there is nothing to meta-learn; give a model with trainable parameters"
            )
        self.model, self.loss = model, loss
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.path, self.chunk_size = path, chunk_size
        self.adapted = adapted_names(model, inner_params, list(self.params))
        resolve_path(model, path)  # refuse a bad path now, not at the first batch
        MetaLearner.inner_loop(self, None, None)  # refuse bad per-parameter rates now, too
        self._warned = False
        # "auto": decide(key, plans, run) -> Decision measures (a trainer may wrap it to
        # record and share its decisions); plans holds each task shape's, _forced the one a
        # measuring step runs.
        self.decide = Autotuner(memory_budget)
        self.plans: dict[str, Plan] = {}
        self._forced: Plan | None = None

    chunked = True  # backward passes chunk the meta-batch by chunk_size (Reptile's do not)

    @property
    def executor(self) -> TaskExecutor:
        """The model bound to its current frozen parameters and buffers."""
        return TaskExecutor.create(self.model, self.path)

    def executor_for(self, batch: TaskBatch) -> TaskExecutor:
        """:attr:`executor` with ``"auto"`` resolved for ``batch``'s task sizes."""
        return TaskExecutor.create(self.model, self.path, batch)

    def plan_for(
        self, batch: TaskBatch, meta_batch_size: int | None = None
    ) -> tuple[TaskExecutor, int | None]:
        """The executor and tasks per backward pass of a training step on ``batch``: the given
        ``path`` and ``chunk_size``, or for ``"auto"`` the plan measured on the first batch of
        its shape (:func:`~metagrad.algorithms.autotune.plan_key`), kept in :attr:`plans`
        (with ``METAGRAD_MEASURE_PATHS=0``: the model's rule, :meth:`executor_for`)."""
        plan = self._forced
        if plan is None and self.path == "auto" and measuring():
            key = plan_key(batch, self._plan_variant())
            if key not in self.plans:
                self.plans[key] = measured_plan(self, key, batch, meta_batch_size)
            plan = self.plans[key]
        if plan is None:
            executor = self.executor_for(batch)
            return executor, executor.backprop_chunk(self.chunk_size)
        executor = TaskExecutor.create(self.model, plan.path)
        return executor, executor.backprop_chunk(plan.chunk_size)

    def _plan_variant(self) -> str:
        """What besides the batch's shape changes a step's work (e.g. the order)."""
        return ""

    def _side_state(self) -> object:
        """What a :meth:`backward` call changes besides ``.grad`` (its counters, generators),
        for a measuring step to put back (:meth:`_set_side_state`)."""
        return self._draws()

    def _set_side_state(self, state: object) -> None:
        self._rewind(state)

    @property
    def params(self) -> Params:
        """The adaptable parameters (the model's own tensors)."""
        return split_state(self.model).params

    @property
    def adapted_params(self) -> Params:
        """The parameters the inner loop changes (:attr:`params` unless ``inner_params``)."""
        params = self.params
        return params if self.adapted is None else {k: params[k] for k in self.adapted}

    def learned(self) -> Params:
        """What the learner meta-learns besides the model's weights, by name: learnable
        (tensor) inner learning rates, and whatever a subclass adds."""
        return learnable_rates(self.inner_lr)

    def parameters(self) -> Iterator[Tensor]:
        """Everything the outer optimiser trains: ``model.parameters()``, then
        :meth:`learned` (``torch.optim.Adam(learner.parameters())``)."""
        return itertools.chain(self.model.parameters(), self.learned().values())

    def inner_loop(self, inner_steps: int | None, inner_lr) -> InnerLoop:
        lr = self.inner_lr if inner_lr is None else inner_lr
        check_rate_names(lr if isinstance(lr, Sequence) else [lr], self.adapted_params)
        steps = self.inner_steps if inner_steps is None else inner_steps
        return InnerLoop(lr, steps, adapted=self.adapted)

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        *,
        inner_steps: int | None = None,
        inner_lr: LearningRate | Sequence[LearningRate] | None = None,
    ) -> Params:
        """Adapt to one task's support set ``support_x [N, ...]``; returns detached params.

        Steps and learning rate default to the training ones; meta-testing often uses more.
        """
        with torch.no_grad():  # no graph to the meta-parameters at test time
            params = detached(self.params)
        inner = self.inner_loop(inner_steps, inner_lr).for_testing()
        executor = TaskExecutor.create(self.model, "loop").with_copied_buffers()
        phi, _ = run_inner(
            executor.task_objective(self.loss), params, (support_x, support_y), inner
        )
        return detached(phi)

    def predict(
        self,
        params: Params,
        x: Tensor,
        *,
        batch_norm: BatchNormMode = "transductive",
        support_x: Tensor | None = None,
    ) -> Tensor:
        """The model's output on ``x [N, ...]`` with the given (adapted) parameters.

        Args:
            params: the adapted parameters.
            x: the examples to predict.
            batch_norm: whose statistics normalise ``x`` (see
                :mod:`metagrad.algorithms.normalization`): ``"transductive"`` (the batch
                ``x`` itself, the papers' protocol), ``"non-transductive"`` (the support set
                plus each example) or ``"support"`` (the support set alone).
            support_x: the support set adapted to; needed by the last two modes.

        Warns (once) when ``x`` is a single example normalised transductively with the batch's
        statistics: the statistics of one example normalise it to zero, so the output barely
        depends on it.
        """
        single = x.shape[0] == 1 and batch_norm == "transductive"
        if single and not self._warned and uses_batch_statistics(self.model):
            self._warned = True
            warnings.warn(
                "predict() on a single example with transductive BatchNorm normalises it with "
                "its own statistics, which erases it (near-uniform outputs); pass "
                "batch_norm='support' with the support_x adapted to, predict a batch of "
                'examples, or use norm="running" (model.eval() for torch.nn BatchNorm)',
                UserWarning,
                stacklevel=2,
            )
        executor = TaskExecutor.create(self.model, "loop").with_copied_buffers()
        with torch.no_grad():
            return predict_with(executor, params, x, batch_norm, support_x)

    def backward(
        self, batch: TaskBatch, *, meta_batch_size: int | None = None
    ) -> MetaOutput:  # pragma: no cover - abstract
        """Accumulate the meta-gradient of ``batch`` into ``.grad``.

        ``meta_batch_size``: ``batch`` is part of a meta-batch of that many tasks (one
        process's tasks of a meta-batch split over processes); what accumulates is its share,
        ``sum over its tasks of grad L_t / meta_batch_size``, so the parts' ``.grad`` summed
        (``torch.distributed.all_reduce``) are the whole meta-batch's mean.
        """
        raise NotImplementedError

    def task_gradients(
        self, batch: TaskBatch, meta_batch_size: int | None = None
    ) -> tuple[list[list[Tensor | None]], MetaOutput]:
        """Each task's share of the meta-gradient, computed alone, in the order of ``batch``.

        Task ``t`` gives ``grad L_t / meta_batch_size`` (default: ``batch``'s tasks) for every
        tensor of :meth:`parameters`, in that order (None where it gives none); ``.grad`` is
        left as it was. Each task runs with what the whole batch's :meth:`backward` would draw
        and count (the same mini-batch order, the same meta-iteration), and the call counts as
        one meta-iteration. The shares summed in task order are, bit for bit, what
        :meth:`backward` accumulates when it backpropagates task by task (the ``"loop"`` path,
        or ``chunk_size=1``), whichever part of a meta-batch each task came with.

        Raises:
            UsageError: the learner runs the tasks of a batch in sequence (Reptile's carried
                inner state), so a task alone would not see what it sees in the batch.
        """
        params = list(self.parameters())
        kept = [p.grad for p in params]
        start = self._draws()
        rows: list[list[Tensor | None]] = []
        outs: list[MetaOutput] = []
        try:
            for task in batch.chunks(1):
                self._rewind(start)
                for p in params:
                    p.grad = None
                outs.append(self.backward(task, meta_batch_size=meta_batch_size or len(batch)))
                rows.append([p.grad for p in params])
        finally:
            for p, g in zip(params, kept, strict=True):
                p.grad = g
        losses = torch.cat([o.task_losses for o in outs])  # [tasks]
        return rows, MetaOutput(losses.mean(), losses, torch.cat([o.query_out for o in outs]))

    def _draws(self) -> object:
        """Where a :meth:`backward` call starts in what it draws or counts besides ``.grad``
        (a meta-iteration counter, a random generator); :meth:`_rewind` goes back there."""
        return None

    def _rewind(self, draws: object) -> None:
        """Go back to ``draws`` (from :meth:`_draws`)."""

    def state_dict(self) -> dict:
        """What the learner itself learns besides the model's weights (saved in checkpoints):
        its learnable learning rates, if any, by their place in ``inner_lr``."""
        rates = learnable_rates(self.inner_lr)
        return {"inner_lr": rates} if rates else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (the tensors in place: an optimiser over
        :meth:`parameters` keeps training them)."""
        state = dict(state)
        rates = learnable_rates(self.inner_lr)
        if rates or "inner_lr" in state:
            copy_into(rates, state.pop("inner_lr", {}), "learnable learning rates")
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state {sorted(state)}, but the checkpoint has "
                "it: it was saved by another algorithm or configuration; test it with its own "
                "run's config.toml"
            )
