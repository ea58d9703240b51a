"""``metagrad.meta_test``: meta-test a loaded model on a user's own tasks, as ``metagrad test``.

The protocol of :func:`metagrad.evaluate.evaluate` (adapt to each task with the run's test-time
inner loop, score its query set after every inner step, mean and 95% interval over tasks), for
tasks a user makes: any :class:`~metagrad.TaskBatch`es, of any number of classes when the head
starts per task (``"zero"`` or ``"prototypes"``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from metagrad.algorithms.head_init import HeadInit, with_head
from metagrad.algorithms.normalization import BatchNormMode, check_mode
from metagrad.algorithms.paths import TaskExecutor
from metagrad.errors import UsageError
from metagrad.evaluate.protocol import EvalResult, evaluate
from metagrad.functional.params import detached
from metagrad.models import head_of
from metagrad.train.deploy import Learner
from metagrad.types import TaskBatch


def meta_test(
    learner: Learner,
    tasks: TaskBatch | Iterable[TaskBatch],
    *,
    inner_steps: int | None = None,
    head: HeadInit = "trained",
    batch_norm: BatchNormMode = "transductive",
) -> EvalResult:
    """Adapt to every task and score its query set after each inner step, as ``metagrad
    test`` does: ``result.accuracy(step)`` and ``result.loss(step)`` are the mean and 95%
    interval over the tasks (``result.table()`` prints them all).

    Args:
        learner: from :func:`load`.
        tasks: a :class:`~metagrad.TaskBatch` or an iterable of them (e.g. chunks of a
            generator of episodes).
        inner_steps: test steps (None: the run's).
        head: how each task's head starts (``"trained"``: the meta-learned head, the papers'
            protocol; ``"zero"`` or ``"prototypes"`` per task, for any number of classes).
        batch_norm: whose statistics normalise the queries (the papers': ``"transductive"``).
    """
    check_mode(batch_norm)
    batches = iter([tasks] if isinstance(tasks, TaskBatch) else tasks)
    first = next(batches, None)
    if first is None:
        raise UsageError("meta_test got no tasks: give a TaskBatch or an iterable of them")
    inner, batch_size = learner.test_inner(inner_steps)
    algorithm, cfg = learner.algorithm, learner.config
    args = (inner, learner.classification)
    kwargs = dict(inner_batch_size=batch_size, seed=cfg.eval.seed, batch_norm=batch_norm)
    if head == "trained":
        if learner.classification:  # the meta-learned head scores its own classes only
            units = learner.model.get_submodule(head_of(learner.model)).out_features
            if (ways := int(first.support_y.max()) + 1) != units:
                raise UsageError(
                    f"head 'trained' keeps the meta-learned head of {units} classes, but the "
                    f"tasks have {ways}: use head='prototypes' or head='zero'"
                )
        executor = algorithm.executor_for(first)
        every = itertools.chain([first], batches)
        return evaluate(executor, algorithm.loss, algorithm.params, every, *args, **kwargs)
    executor = TaskExecutor.create(learner.model, "loop")
    head_name = head_of(learner.model)
    results = []
    for batch in itertools.chain([first], batches):
        for task in batch:  # each task's own head, then the protocol on that task alone
            ways = int(task.support_y.max()) + 1
            theta = detached(algorithm.params)
            x, y = task.support_x, task.support_y
            params = with_head(head, executor, theta, head_name, x, y, ways)
            one = TaskBatch.stack([task])
            results.append(evaluate(executor, algorithm.loss, params, [one], *args, **kwargs))
    accuracies = [r.accuracies for r in results] if learner.classification else None
    return EvalResult(
        np.concatenate([r.losses for r in results], axis=1),
        None if accuracies is None else np.concatenate(accuracies, axis=1),
        results[0].steps,
    )
