"""Meta-testing: adapt to each test task and score the query set after every inner step.

The protocol of the papers: a fixed, seeded set of test tasks (600 by default), the query loss
(and accuracy for classification) after 0, 1, ..., k inner steps, reported as the mean over
tasks with a 95% interval ``1.96 * std / sqrt(n)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np
import torch

from metagrad.algorithms.normalization import BatchNormMode, check_mode, predict_with
from metagrad.algorithms.paths import TaskExecutor, autocast_dtype
from metagrad.algorithms.reptile import minibatch_schedule
from metagrad.checks import count_problem, require
from metagrad.functional.inner import InnerLoop, initial
from metagrad.functional.params import detached, expand_tasks
from metagrad.types import Loss, Params, TaskBatch


@dataclass(frozen=True)
class Summary:
    """Mean and 95% interval half-width over tasks."""

    mean: float
    ci95: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.ci95:.2g}"


def summarize(values: np.ndarray) -> Summary:
    """Mean and ``1.96 * std / sqrt(n)`` (sample standard deviation) of ``values``."""
    n = len(values)
    if not np.isfinite(values).all():  # a diverged task: the mean is unbounded, and so is the CI
        return Summary(float(np.mean(values)), float("inf"))
    with np.errstate(over="ignore"):  # finite but huge (an adaptation diverging): CI inf
        std = float(np.std(values, ddof=1)) if n > 1 else 0.0
    return Summary(float(np.mean(values)), 1.96 * std / np.sqrt(n))


@dataclass(frozen=True)
class EvalResult:
    """Per-task query metrics after each inner step.

    Attributes:
        losses: ``[scored steps, tasks]`` query loss after each scored inner step.
        accuracies: the same for accuracy (classification), else ``None``.
        steps: the inner step of each row (default: every step, ``0, 1, ..., k``).
    """

    losses: np.ndarray
    accuracies: np.ndarray | None
    steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.steps is None:
            object.__setattr__(self, "steps", tuple(range(self.losses.shape[0])))

    @property
    def tasks(self) -> int:
        return self.losses.shape[1]

    def _row(self, step: int) -> int:
        """The row of inner step ``step`` (-1: the last scored step)."""
        if step == -1:
            return -1
        if step not in self.steps:
            raise ValueError(f"inner step {step} was not scored; scored steps: {self.steps}")
        return self.steps.index(step)

    def loss(self, step: int = -1) -> Summary:
        """Query loss after inner step ``step`` (-1: the last)."""
        return summarize(self.losses[self._row(step)])

    def accuracy(self, step: int = -1) -> Summary:
        """Query accuracy after inner step ``step`` (-1: the last)."""
        if self.accuracies is None:
            raise ValueError("no accuracy: this evaluation was not a classification task")
        return summarize(self.accuracies[self._row(step)])

    def diverged(self, step: int = -1) -> int:
        """How many tasks' adaptation diverged (a NaN or infinite query loss) by ``step``."""
        return int((~np.isfinite(self.losses[self._row(step)])).sum())

    def to_dict(self) -> dict:
        """JSON-able: per scored step, mean and interval of each metric (and the number of
        diverged tasks, if any)."""
        out = {"tasks": self.tasks, "steps": []}
        for s in self.steps:
            row = {"step": s, "loss": vars(self.loss(s))}
            if self.diverged(s):
                row["diverged_tasks"] = self.diverged(s)
            if self.accuracies is not None:
                row["accuracy"] = vars(self.accuracy(s))
            out["steps"].append(row)
        return out

    def table(self) -> str:
        """A Markdown table: one row per inner step."""
        head = "| step | query loss |" + (" accuracy |" if self.accuracies is not None else "")
        rule = "| --- | --- |" + (" --- |" if self.accuracies is not None else "")
        rows = [head, rule]
        for s in self.steps:
            acc = f" {_pct(self.accuracy(s))} |" if self.accuracies is not None else ""
            rows.append(f"| {s} | {self.loss(s)} |{acc}")
        note = f"{self.tasks} tasks, mean ± 95% interval"
        if self.diverged():
            note += f"; the adaptation of {self.diverged()} diverged (query loss inf)"
        return "\n".join(rows) + f"\n\n({note})"


def _pct(s: Summary) -> str:
    return f"{100 * s.mean:.2f}% ± {100 * s.ci95:.2f}"


def evaluate(
    executor: TaskExecutor,
    loss: Loss,
    params: Params,
    batches: Iterable[TaskBatch],
    inner: InnerLoop,
    classification: bool,
    transductive: bool = True,
    inner_batch_size: int | None = None,
    seed: int = 0,
    score_every: int = 1,
    batch_norm: BatchNormMode | None = None,
    owned: Callable[[int], bool] | None = None,
) -> EvalResult:
    """Adapt to every task of ``batches`` and score its query set after each inner step.

    Args:
        executor: the model and execution path.
        loss: per-task loss.
        params: the meta-learned initialisation (not modified).
        batches: the test tasks, in chunks that fit in memory.
        inner: test-time learning rate(s), steps and update rule (always run first order).
        classification: also report accuracy (``argmax`` of the last output dimension).
        transductive: if False, each query example is classified in a batch made of the
            support set plus that one example, so BatchNorm statistics never mix query
            examples (Nichol et al.'s non-transductive protocol).
        inner_batch_size: support examples per inner step (Reptile's evaluation); None: all.
        seed: seed of the mini-batch order, so evaluations repeat exactly.
        score_every: score the query set after steps ``0, n, 2n, ...`` and the last step only.
            Scoring is the cost of a non-transductive evaluation (``n_query`` forward passes of
            ``n_support + 1`` examples per scored step), so a long adaptation scored at
            every step spends far more time scoring than adapting.
        batch_norm: whose statistics normalise the queries, one of
            :data:`~metagrad.algorithms.normalization.BATCH_NORM_MODES` (``"support"``: the
            support set's alone, as ``metagrad adapt`` predicts); None: ``"transductive"`` or
            ``"non-transductive"`` as ``transductive`` says.
        owned: which chunks of ``batches`` (by index) to score, the others being scored by
            other processes; a chunk skipped still draws its mini-batch order, so every chunk
            sees the same mini-batches whichever process scores it. None: all.

    Returns:
        The scores of the chunks scored, in their order.
    """
    require("score_every", count_problem(score_every, 1))
    mode = batch_norm or ("transductive" if transductive else "non-transductive")
    check_mode(mode)
    last = inner.inner_steps
    scored = tuple(s for s in range(last + 1) if s % score_every == 0 or s == last)
    theta = detached(params)
    # Learned rates and per-step tensors are used as they are, with no graph to them; a
    # diverged task scores inf.
    inner = replace(inner.for_testing(), first_order=True, check_finite=False)
    generator = torch.Generator().manual_seed(seed)
    losses, accs = [], []
    for index, batch in enumerate(batches):
        batch = autocast_dtype(batch, theta)
        pick = minibatch_schedule(batch.support_x.shape[1], inner_batch_size, generator)
        if owned is not None and not owned(index):
            for step in range(inner.inner_steps if pick is not None else 0):
                pick(step)  # the draws this chunk's adaptation makes
            continue
        x, y = batch.support_x, batch.support_y
        adapted = executor.trajectory_all(loss, theta, x, y, inner, pick)
        step_losses, step_accs = [], []
        # The parameters after 0, 1, ..., k steps (a step not scored is still taken).
        start = expand_tasks(initial(theta, inner), len(batch))
        for step, step_params in enumerate(chain([start], adapted)):
            if step not in scored:
                continue
            step_params = detached(step_params)  # [tasks, ...]
            with torch.no_grad():
                if mode == "transductive":
                    out = executor.predict_all(step_params, batch.query_x)  # [tasks, n_query, ..]
                else:  # each task's queries normalised with its support set (and themselves)
                    tasks = [(_task(step_params, i), t) for i, t in enumerate(batch)]
                    out = torch.stack(
                        [predict_with(executor, p, t.query_x, mode, t.support_x) for p, t in tasks]
                    )
                step_loss = executor.task_losses(loss, out, batch.query_y).cpu().numpy()
                step_losses.append(np.nan_to_num(step_loss, nan=np.inf))  # diverged: inf
                if classification:
                    hits = (out.argmax(-1) == batch.query_y).float().mean(-1)
                    step_accs.append(hits.cpu().numpy())
        losses.append(np.stack(step_losses))
        accs.append(np.stack(step_accs) if classification else None)
    if not losses:  # no chunk was this process's
        empty = np.zeros((len(scored), 0), dtype=np.float32)
        return EvalResult(empty, empty if classification else None, scored)
    loss_arr = np.concatenate(losses, axis=1)
    acc_arr = np.concatenate(accs, axis=1) if classification else None
    return EvalResult(loss_arr, acc_arr, scored)


def _task(params: Params, i: int) -> Params:
    return {k: v[i] for k, v in params.items()}
