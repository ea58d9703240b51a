"""The thin stateful shell: meta-learners bound to a model, driven by any ``torch.optim``.

``backward(batch)`` writes the meta-gradient (MAML, FOMAML) or the Reptile direction into the
model's ``.grad`` (accumulating, like ``loss.backward()``), so a training step is::

    opt.zero_grad(); learner.backward(batch); opt.step()

``adapt`` and ``predict`` serve meta-testing and deployment. Nothing here changes the module
except ``.grad``; the adapted parameters are returned as a dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metagrad.algorithms.maml import MetaOutput, maml_objective, meta_gradient
from metagrad.algorithms.normalization import BatchNormMode, predict_with
from metagrad.algorithms.paths import (
    TaskExecutor,
    autocast_dtype,
    check_batch,
    probe,
    resolve_path,
    uses_batch_statistics,
)
from metagrad.algorithms.reptile import reptile_direction
from metagrad.checks import count_problem, finite_or_raise, lr_problem, require
from metagrad.errors import UsageError
from metagrad.functional.inner import InnerLoop, check_rate_names, run_inner
from metagrad.functional.optim import LearningRate, make_inner_optimizer
from metagrad.functional.params import detached, split_state
from metagrad.types import Loss, Params, TaskBatch


def learnable_rates(inner_lr) -> Params:
    """The tensors of ``inner_lr`` that require grad (learnable learning rates: meta-parameters
    like the weights), by a name of their place in ``inner_lr``; each tensor once."""
    found: Params = {}

    def visit(value, name: str) -> None:
        if isinstance(value, Tensor):
            if value.requires_grad and all(value is not t for t in found.values()):
                found[name] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                visit(v, f"{name}[{k!r}]")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            for i, v in enumerate(value):
                visit(v, f"{name}[{i}]")

    visit(inner_lr, "inner_lr")
    return found


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
            (see :mod:`metagrad.algorithms.paths`).
        chunk_size: tasks per backward pass on the vectorised path (bounds memory); the loop
            path always backpropagates task by task.

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
    ) -> None:
        # The rules of metagrad.checks, as the config's: the same words on both sides.
        require("inner_lr", lr_problem(inner_lr))
        require("inner_steps", count_problem(inner_steps, 1))
        require("chunk_size", count_problem(chunk_size, 1, optional=True))
        if not any(p.requires_grad for p in model.parameters()):
            raise UsageError(
                f"the model ({type(model).__name__}) has no parameters with requires_grad=True: "
                "there is nothing to meta-learn; give a model with trainable parameters"
            )
        self.model, self.loss = model, loss
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.path, self.chunk_size = path, chunk_size
        resolve_path(model, path)  # refuse a bad path now, not at the first batch
        MetaLearner.inner_loop(self, None, None)  # refuse bad per-parameter rates now, too
        self._warned = False

    @property
    def executor(self) -> TaskExecutor:
        """The model bound to its current frozen parameters and buffers."""
        return TaskExecutor.create(self.model, self.path)

    def executor_for(self, batch: TaskBatch) -> TaskExecutor:
        """:attr:`executor` with ``"auto"`` resolved for ``batch``'s task sizes."""
        return TaskExecutor.create(self.model, self.path, batch)

    @property
    def params(self) -> Params:
        """The adaptable parameters (the model's own tensors)."""
        return split_state(self.model).params

    def inner_loop(self, inner_steps: int | None, inner_lr) -> InnerLoop:
        lr = self.inner_lr if inner_lr is None else inner_lr
        check_rate_names(lr if isinstance(lr, Sequence) else [lr], self.params)
        return InnerLoop(lr, self.inner_steps if inner_steps is None else inner_steps)

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
        inner = self.inner_loop(inner_steps, inner_lr)
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

    def backward(self, batch: TaskBatch) -> MetaOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What the learner itself learns besides the model's weights (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state, but the checkpoint has {sorted(state)}: "
                "it was saved by another algorithm or configuration; test it with its own run's "
                "config.toml"
            )


class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning; ``first_order=True`` gives FOMAML.

    ``recompute_inner=True`` recomputes the inner steps during the backward pass instead of
    keeping their activations: memory grows with ``sqrt(inner_steps)`` copies of the parameters
    (for large models and long adaptations), at the cost of about two more forward steps per
    step.

    Example::

        maml = MAML(model, inner_lr=0.4, inner_steps=1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
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
    ) -> None:
        super().__init__(
            model,
            loss,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            path=path,
            chunk_size=chunk_size,
        )
        self.first_order, self.recompute_inner = first_order, recompute_inner

    def inner_loop(self, inner_steps: int | None = None, inner_lr=None) -> InnerLoop:
        base = super().inner_loop(inner_steps, inner_lr)
        return InnerLoop(
            base.inner_lr, base.inner_steps, self.first_order, recompute=self.recompute_inner
        )

    def _prepared(self, batch: TaskBatch) -> tuple[Params, TaskBatch, TaskExecutor]:
        params = self.params
        batch = autocast_dtype(check_batch(batch), params)
        if batch.query_x.shape[1] == 0:
            raise UsageError(
                "the query set is empty (0 examples per task), but MAML's meta-loss is the loss "
                "on the query set; give queries >= 1 (Reptile needs none)"
            )
        return params, batch, self.executor_for(batch)

    def meta_loss(self, batch: TaskBatch) -> MetaOutput:
        """The meta-objective with its graph (``out.loss.backward()`` works); no chunking.

        Raises:
            FloatingPointError: the meta-loss is NaN or infinite, as :meth:`backward` does.
        """
        params, batch, executor = self._prepared(batch)
        out = maml_objective(executor, self.loss, params, batch, self.inner_loop())
        finite_or_raise(out.loss, "meta-loss")
        return out

    def backward(self, batch: TaskBatch) -> MetaOutput:
        """Accumulate the meta-gradient of ``batch`` into ``.grad``; returns the query losses.

        Learnable (tensor) inner learning rates are meta-parameters too: their ``.grad``
        accumulates as well, as ``meta_loss(batch).loss.backward()`` would.
        """
        params, batch, executor = self._prepared(batch)
        inner = self.inner_loop()
        targets = {**params, **learnable_rates(inner.inner_lr)}

        def objective(b: TaskBatch) -> MetaOutput:
            return maml_objective(executor, self.loss, params, b, inner)

        grads, out = meta_gradient(
            objective, targets, batch, executor.backprop_chunk(self.chunk_size)
        )
        accumulate_grad(targets, grads)
        return out


class Reptile(MetaLearner):
    """Reptile: ``.grad = theta - mean(phi)``; step it with ``torch.optim.SGD(lr=epsilon)``.

    Args:
        inner_optimizer: ``"sgd"`` or ``"adam"`` (the paper's Omniglot runs: Adam, beta1=0).
        inner_batch_size: support examples per inner step (None: the whole support set).
        adam_betas: betas of the inner Adam.
        inner_state: ``"reset"`` starts every task's inner optimiser afresh; ``"carry"`` keeps
            its state (Adam's moments and step count) from one meta-batch to the next, as the
            Reptile paper's code did, and starts meta-test tasks from it too. The state is part
            of :meth:`state_dict`, so checkpoints keep it.
        generator: random source of the mini-batch order (seed it for reproducibility).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss = F.cross_entropy,
        *,
        inner_lr,
        inner_steps: int = 5,
        inner_optimizer: str = "sgd",
        inner_batch_size: int | None = None,
        adam_betas: tuple[float, float] = (0.0, 0.999),
        inner_state: str = "reset",
        path: str = "auto",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, loss, inner_lr=inner_lr, inner_steps=inner_steps, path=path)
        require("inner_batch_size", count_problem(inner_batch_size, 1, optional=True))
        if inner_state not in ("reset", "carry"):
            raise ValueError(f"inner_state must be 'reset' or 'carry', got {inner_state!r}")
        self.optimizer = make_inner_optimizer(inner_optimizer, adam_betas)
        self.inner_batch_size, self.generator = inner_batch_size, generator
        self.inner_state = inner_state
        self.carried: dict | None = None  # the inner optimiser's state when carried
        self._used: dict[tuple, set[str]] = {}  # parameters the loss uses, per batch shape

    def used_params(self, executor: TaskExecutor, params: Params, batch: TaskBatch) -> set[str]:
        """The parameters the loss uses (:func:`~metagrad.algorithms.paths.probe` on the first
        task), probed once per batch shape. Reptile's direction cannot tell an unused
        parameter (no gradient) from a used one that did not move."""
        key = (tuple(batch.support_x.shape[1:]), tuple(batch.support_y.shape[1:]))
        key += (batch.support_x.dtype, batch.support_y.dtype)
        if key not in self._used:
            x, y = batch.support_x[0], batch.support_y[0]
            self._used[key] = probe(executor, self.loss, params, x, y)
        return self._used[key]

    def inner_loop(self, inner_steps: int | None = None, inner_lr=None) -> InnerLoop:
        base = super().inner_loop(inner_steps, inner_lr)
        return InnerLoop(base.inner_lr, base.inner_steps, True, self.optimizer, state=self.carried)

    def backward(self, batch: TaskBatch) -> MetaOutput:
        """Write (accumulate) the Reptile direction of ``batch`` into ``.grad``."""
        params = self.params
        batch = autocast_dtype(check_batch(batch), params)
        executor = self.executor_for(batch)
        used = self.used_params(executor, params, batch)
        direction, out, state = reptile_direction(
            executor,
            self.loss,
            params,
            batch,
            self.inner_loop(),
            self.inner_batch_size,
            self.generator,
        )
        finite_or_raise(torch.stack([d.abs().max() for d in direction.values()]), "Reptile step")
        # A parameter the loss never uses stays where it is and gets no gradient (as on MAML's
        # path), so an optimiser's weight decay does not move it.
        accumulate_grad(params, {k: v for k, v in direction.items() if k in used})
        if self.inner_state == "carry":
            self.carried = {g: detached(sub) for g, sub in state.items()}
        return out

    def state_dict(self) -> dict:
        return {} if self.carried is None else {"inner_state": self.carried}

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state) - {"inner_state"}
        if unknown or (state and self.inner_state != "carry"):
            raise ValueError(
                f"this Reptile (inner_state={self.inner_state!r}) cannot load a learner state "
                f"with {sorted(state)}: it was saved with algorithm.inner_state = 'carry'; test "
                "it with its own run's config.toml"
            )
        self.carried = state.get("inner_state")
