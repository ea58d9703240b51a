"""MAML and its family as a meta-learner bound to a model (the stateful shell of
:mod:`metagrad.algorithms.maml`'s pure objective): FOMAML, ANIL, BOIL, Meta-SGD and MAML++ are
options of the one inner loop, not new classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from metagrad.algorithms.autotune import (
    DEFAULT_BUDGET,
)
from metagrad.algorithms.learner import MetaLearner, accumulate_grad
from metagrad.algorithms.maml import (
    MetaOutput,
    maml_objective,
    meta_gradient,
    multi_step_objective,
)
from metagrad.algorithms.mamlpp import first_order_at, msl_weights, schedule_point
from metagrad.algorithms.paths import (
    TaskExecutor,
    autocast_dtype,
    check_batch,
)
from metagrad.algorithms.per_step import at_steps, copy_into, per_step_stats, per_step_weights
from metagrad.algorithms.rates import learned_rates
from metagrad.algorithms.selection import InnerParams
from metagrad.checks import count_problem, finite_or_raise, require
from metagrad.errors import UsageError
from metagrad.functional.inner import InnerLoop
from metagrad.types import Loss, Params, TaskBatch


class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning and its family; ``first_order=True`` gives FOMAML.

    The family are options of the one inner loop, each usable alone:

    - ``inner_params="head"``: ANIL (Raghu et al., 2020), the body's features computed once per
      task; ``"body"``: BOIL (Oh et al., 2021); see :class:`MetaLearner`.
    - ``learn_inner_lr="per_element"``: Meta-SGD (Li et al., 2017), a learnable rate per weight
      element starting at ``inner_lr``; ``"per_layer_per_step"``: MAML++'s LSLR
      (:mod:`metagrad.algorithms.rates`).
    - MAML++ (Antoniou et al., 2019): ``multi_step_loss_iterations`` (MSL),
      ``first_order_iterations`` (DA; :mod:`metagrad.algorithms.mamlpp`),
      ``per_step_bn_weights`` (BNWB) and ``per_step_bn_stats`` (BNRS;
      :mod:`metagrad.algorithms.per_step`). Its CA is the outer optimiser's schedule.

    The schedules count meta-iterations: each :meth:`backward` is one (``iteration``, kept in
    :meth:`state_dict`); with ``schedule_every = N`` they move once every N of them, as
    MAML++'s code moves them once per 500-iteration epoch.

    ``recompute_inner=True`` recomputes the inner steps during the backward pass instead of
    keeping their activations: memory grows with ``sqrt(inner_steps)`` copies of the parameters
    (for large models and long adaptations), at the cost of about two more forward steps per
    step.

    Example::

        maml = MAML(model, inner_lr=0.4, inner_steps=1)
        opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
        opt.zero_grad(); maml.backward(batch); opt.step()
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss = F.cross_entropy,
        *,
        inner_lr,
        inner_steps: int = 1,
        first_order: bool = False,
        path: str = "auto",
        chunk_size: int | None = None,
        recompute_inner: bool = False,
        inner_params: InnerParams = None,
        learn_inner_lr: str = "none",
        multi_step_loss_iterations: int = 0,
        first_order_iterations: int = 0,
        schedule_every: int = 1,
        per_step_bn_weights: bool = False,
        per_step_bn_stats: bool = False,
        memory_budget: float = DEFAULT_BUDGET,
    ) -> None:
        if per_step_bn_stats and path in ("vectorized", "vmap"):
            raise UsageError(
                f"per_step_bn_stats updates BatchNorm running statistics in place, task by task, "
                f"which path={path!r} cannot do; use path='loop' (or 'auto')"
            )
        super().__init__(
            model,
            loss,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            path=path,
            chunk_size=chunk_size,
            inner_params=inner_params,
            memory_budget=memory_budget,
        )
        require("multi_step_loss_iterations", count_problem(multi_step_loss_iterations, 0))
        require("first_order_iterations", count_problem(first_order_iterations, 0))
        require("schedule_every", count_problem(schedule_every, 1))
        if multi_step_loss_iterations and recompute_inner:
            raise UsageError(
                "multi_step_loss_iterations needs the parameters after every inner step, and "
                "recompute_inner keeps none of them: turn one of them off"
            )
        if per_step_bn_stats and recompute_inner:
            raise UsageError(
                "per_step_bn_stats updates running statistics in every forward pass, and "
                "recompute_inner reruns the steps in the backward pass: turn one of them off"
            )
        self.first_order, self.recompute_inner = first_order, recompute_inner
        self.multi_step_loss_iterations = multi_step_loss_iterations
        self.first_order_iterations = first_order_iterations
        self.schedule_every = schedule_every
        self.iteration = 0  # meta-iterations taken (backward calls): where the schedules are
        self.per_step: Params = {
            **(per_step_weights(model, inner_steps) if per_step_bn_weights else {}),
            **(per_step_stats(model, inner_steps) if per_step_bn_stats else {}),
        }
        # One view of each step's row, made once: the inner loops of validation and test are
        # then equal (the same tensors), and each row's updates reach the tensor itself.
        self._rows = at_steps(self.per_step, inner_steps)
        self._hold_per_step_names()
        self.inner_lr = learned_rates(self.adapted_params, inner_lr, learn_inner_lr, inner_steps)

    def _hold_per_step_names(self) -> None:
        """Parameters that take per-step values are never adapted in the inner loop."""
        names = set(self.per_step) & set(self.params)
        if not names:
            return
        if self.adapted is not None and names & self.adapted:
            raise UsageError(
                f"inner_params selects {sorted(names & self.adapted)[:3]}..., which "
                "per_step_bn_weights gives one value per inner step instead: leave the "
                "BatchNorm weights out of inner_params"
            )
        if self.adapted is None:
            self.adapted = frozenset(set(self.params) - names)

    @property
    def schedules(self) -> bool:
        """Whether a step depends on the meta-iteration (MSL or DA)."""
        return bool(self.multi_step_loss_iterations or self.first_order_iterations)

    def learned(self) -> Params:
        per_step = {f"per_step[{k!r}]": t for k, t in self.per_step.items() if t.requires_grad}
        return {**super().learned(), **per_step}

    def inner_loop(self, inner_steps: int | None = None, inner_lr=None) -> InnerLoop:
        base = super().inner_loop(inner_steps, inner_lr)
        first_order = self.first_order or first_order_at(
            self.schedule_iteration, self.first_order_iterations
        )
        return InnerLoop(
            base.inner_lr,
            base.inner_steps,
            first_order,
            recompute=self.recompute_inner,
            adapted=base.adapted,
            per_step=self._rows,
        )

    def step_weights(self) -> list[float] | None:
        """MSL's importance of each step's query loss at this iteration (None: the last's)."""
        return msl_weights(
            self.inner_steps, self.schedule_iteration, self.multi_step_loss_iterations
        )

    @property
    def schedule_iteration(self) -> int:
        """Where the schedules are: the first iteration of the current block of
        ``schedule_every``."""
        return schedule_point(self.iteration, self.schedule_every)

    def _plan_variant(self) -> str:
        inner = self.inner_loop()
        order = "first order" if inner.first_order else "second order"
        return order + (", every step's loss" if self.step_weights() is not None else "")

    def _prepared(
        self, batch: TaskBatch, meta_batch_size: int | None = None, training: bool = True
    ) -> tuple[Params, TaskBatch, TaskExecutor, int | None]:
        params = self.params
        batch = autocast_dtype(check_batch(batch), params)
        if batch.query_x.shape[1] == 0:
            raise UsageError(
                "the query set is empty (0 examples per task), but MAML's meta-loss is the loss "
                "on the query set; give queries >= 1 (Reptile needs none)"
            )
        if not training:
            return params, batch, self.executor_for(batch), None
        return params, batch, *self.plan_for(batch, meta_batch_size)

    def _objective(self, executor: TaskExecutor, params: Params, inner: InnerLoop):
        weights = self.step_weights()

        def objective(b: TaskBatch) -> MetaOutput:
            if weights is None:
                return maml_objective(executor, self.loss, params, b, inner)
            return multi_step_objective(executor, self.loss, params, b, inner, weights)

        return objective

    def meta_loss(self, batch: TaskBatch) -> MetaOutput:
        """The meta-objective with its graph (``out.loss.backward()`` works); no chunking, and
        the schedules stay where they are.

        Raises:
            FloatingPointError: the meta-loss is NaN or infinite, as :meth:`backward` does.
        """
        params, batch, executor, _ = self._prepared(batch, training=False)
        out = self._objective(executor, params, self.inner_loop())(batch)
        finite_or_raise(out.loss, "meta-loss")
        return out

    def backward(self, batch: TaskBatch, *, meta_batch_size: int | None = None) -> MetaOutput:
        """Accumulate the meta-gradient of ``batch`` into ``.grad``; returns the query losses.

        Learnable inner learning rates and per-step BatchNorm weights are meta-parameters too
        (:meth:`learned`): their ``.grad`` accumulates as well, as
        ``meta_loss(batch).loss.backward()`` would. Counts one meta-iteration.
        ``meta_batch_size``: accumulate ``batch``'s share of a larger meta-batch (see
        :meth:`MetaLearner.backward`).
        """
        params, batch, executor, chunk = self._prepared(batch, meta_batch_size)
        targets = {**params, **self.learned()}
        objective = self._objective(executor, params, self.inner_loop())
        grads, out = meta_gradient(objective, targets, batch, chunk, meta_batch_size)
        accumulate_grad(targets, grads)
        self.iteration += 1
        return out

    def _draws(self) -> object:
        return self.iteration

    def _rewind(self, draws: object) -> None:
        self.iteration = draws

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.per_step:
            state["per_step"] = dict(self.per_step)
        if self.schedules:
            state["iteration"] = self.iteration
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        if self.per_step or "per_step" in state:
            copy_into(self.per_step, state.pop("per_step", {}), "per-step BatchNorm tensors")
        if self.schedules and "iteration" in state:
            self.iteration = int(state.pop("iteration"))
        super().load_state_dict(state)
