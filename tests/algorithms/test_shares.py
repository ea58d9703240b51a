"""A meta-batch computed in parts (the processes of a distributed run): ``backward(part,
meta_batch_size=N)`` accumulates the part's share, and ``task_gradients`` each task's, which
summed in task order are the loop's backward bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import image_batch, regression_batch
from metagrad import MAML, Reptile
from metagrad.algorithms.baselines import Pretrained
from metagrad.errors import UsageError
from metagrad.models import MLP, Conv4
from metagrad.types import TaskBatch

LEARNERS = {
    "maml": lambda m, path: MAML(m, F.mse_loss, inner_lr=0.1, inner_steps=2, path=path),
    "metasgd": lambda m, path: MAML(
        m, F.mse_loss, inner_lr=0.1, learn_inner_lr="per_element", path=path
    ),
    "mamlpp": lambda m, path: MAML(
        m,
        F.mse_loss,
        inner_lr=0.1,
        inner_steps=2,
        learn_inner_lr="per_layer_per_step",
        multi_step_loss_iterations=3,
        first_order_iterations=1,
        path=path,
    ),
    "reptile": lambda m, path: Reptile(
        m,
        F.mse_loss,
        inner_lr=0.1,
        inner_steps=3,
        inner_batch_size=2,
        path=path,
        generator=torch.Generator().manual_seed(3),
    ),
    "pretrained": lambda m, path: Pretrained(m, F.mse_loss, inner_lr=0.1, path=path),
}


def _learner(name: str, path: str = "auto", dtype=torch.float64):
    torch.manual_seed(0)
    return LEARNERS[name](MLP(2, 1, (6, 5)).to(dtype), path)


def _grads(learner) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in learner.parameters()]


def _parts(batch: TaskBatch, *sizes: int) -> list[TaskBatch]:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    fields = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    return [TaskBatch(*(t[s : s + n] for t in fields)) for s, n in zip(starts, sizes)]


@pytest.mark.parametrize("name", list(LEARNERS))
def test_the_shares_of_the_parts_sum_to_the_whole_meta_batch(name):
    batch = regression_batch(tasks=5)
    whole = _learner(name)
    whole.backward(batch)
    shares = []
    for part in _parts(batch, 2, 3):  # as two processes: each its learner and its share
        learner = _learner(name)
        learner.backward(part, meta_batch_size=5)
        shares.append(_grads(learner))
    for *parts, expected in zip(*shares, _grads(whole), strict=True):
        assert all((a is None) == (expected is None) for a in parts)
        if expected is not None:
            torch.testing.assert_close(sum(parts), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["maml", "metasgd", "mamlpp", "reptile"])
def test_each_tasks_share_summed_in_order_is_the_loops_backward_bit_for_bit(name):
    batch = regression_batch(tasks=4, dtype=torch.float32)
    loop = _learner(name, "loop", torch.float32)
    loop.backward(batch)
    shares = []
    for part in _parts(batch, 1, 3):  # whichever part of the meta-batch a task came with
        alone = _learner(name, "loop", torch.float32)  # as a process of its own
        kept = [torch.full_like(p, 7.0) for p in alone.parameters()]
        for p, g in zip(alone.parameters(), kept):
            p.grad = g  # task_gradients leaves .grad as it is
        rows, out = alone.task_gradients(part, meta_batch_size=4)
        shares += rows
        assert out.task_losses.shape == (len(part),)
        assert all(p.grad is g for p, g in zip(alone.parameters(), kept))
    for i, expected in enumerate(_grads(loop)):
        total = None
        for row in shares:
            if row[i] is not None:
                total = row[i].clone() if total is None else total + row[i]
        if name == "reptile":  # the mean of the directions, summed as shares: not bit for bit
            torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(total, expected), i
    if name == "mamlpp":  # one meta-iteration, as one backward of the batch
        assert alone.iteration == 1
    if name == "reptile":  # one meta-batch's mini-batch draws, not one per task
        assert torch.equal(alone.generator.get_state(), loop.generator.get_state())


def test_task_gradients_of_a_vectorized_model_equal_those_of_the_loop():
    torch.manual_seed(0)
    batch = image_batch(tasks=3, dtype=torch.float32)
    rows = {}
    for path in ("loop", "vectorized"):
        torch.manual_seed(0)
        model = Conv4(3, filters=4, image_size=8)
        maml = MAML(model, F.cross_entropy, inner_lr=0.1, path=path)
        rows[path], _ = maml.task_gradients(batch)
    for a, b in zip(rows["loop"], rows["vectorized"], strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_reptiles_carried_inner_state_cannot_take_tasks_one_at_a_time():
    reptile = Reptile(MLP(2, 1, (4,)), F.mse_loss, inner_lr=0.1, inner_state="carry")
    with pytest.raises(UsageError, match="inner_state = 'reset'"):
        reptile.task_gradients(regression_batch(tasks=2, dtype=torch.float32))
