"""Meta-testing protocol: per-step scores, paths agree, intervals, non-transductive BN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import image_batch, regression_batch
from metagrad.algorithms import InnerLoop, TaskExecutor
from metagrad.evaluate import evaluate, summarize
from metagrad.functional import Adam, adapt, split_state
from metagrad.models import MLP, Conv4


def test_summary_is_mean_and_195_standard_errors():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    s = summarize(values)
    assert s.mean == 2.5
    assert s.ci95 == pytest.approx(1.96 * np.std(values, ddof=1) / 2)


@pytest.mark.parametrize("optimizer", [None, Adam(betas=(0.0, 0.999))])
def test_step_k_scores_equal_adapting_k_steps(optimizer):
    model, batch = MLP(2, 1, (8,)).double(), regression_batch()
    params = split_state(model).params
    inner = InnerLoop(0.05, 4, optimizer=optimizer or InnerLoop(0.0, 0).optimizer)
    result = evaluate(
        TaskExecutor.create(model, "loop"), F.mse_loss, params, [batch], inner, classification=False
    )
    assert result.losses.shape == (5, 3)
    for t, task in enumerate(batch):
        for k in (0, 2, 4):
            phi = adapt(
                lambda p, d: F.mse_loss(torch.func.functional_call(model, p, (d[0],)), d[1]),
                params,
                (task.support_x, task.support_y),
                inner_lr=0.05,
                inner_steps=k,
                optimizer=inner.optimizer,
                first_order=True,
            )
            with torch.no_grad():
                ref = F.mse_loss(
                    torch.func.functional_call(model, phi, (task.query_x,)), task.query_y
                )
            assert result.losses[k, t] == pytest.approx(ref.item(), rel=1e-10)


@pytest.mark.parametrize("transductive", [True, False])
def test_vectorised_and_loop_evaluation_agree_and_report_accuracy(transductive):
    model = Conv4(3, filters=4, image_size=8).double()
    params, batch = split_state(model).params, image_batch()
    runs = [
        evaluate(
            TaskExecutor.create(model, path),
            F.cross_entropy,
            params,
            batch.chunks(2),
            InnerLoop(0.3, 3),
            classification=True,
            transductive=transductive,
        )
        for path in ("loop", "vectorized")
    ]
    assert np.allclose(runs[0].losses, runs[1].losses, rtol=1e-10)
    assert np.array_equal(runs[0].accuracies, runs[1].accuracies)
    assert runs[0].accuracies.shape == (4, 3)
    assert "| 3 |" in runs[0].table() and "3 tasks" in runs[0].table()


def test_non_transductive_classifies_each_query_with_the_support_set_alone():
    model = Conv4(3, filters=4, image_size=8).double()
    params, batch = split_state(model).params, image_batch()
    executor = TaskExecutor.create(model, "loop")
    non = evaluate(
        executor, F.cross_entropy, params, [batch], InnerLoop(0.3, 0), True, transductive=False
    )
    trans = evaluate(executor, F.cross_entropy, params, [batch], InnerLoop(0.3, 0), True)
    assert not np.allclose(non.losses, trans.losses)  # BatchNorm statistics differ
    task = batch.task(0)
    with torch.no_grad():
        outs = torch.stack([model(torch.cat([task.support_x, q[None]]))[-1] for q in task.query_x])
    ref = F.cross_entropy(outs, task.query_y).item()
    assert non.losses[0, 0] == pytest.approx(ref, rel=1e-10)


def test_non_transductive_with_running_statistics_uses_them():
    model = Conv4(3, filters=4, image_size=8, norm="running").double().eval()
    params, batch = split_state(model).params, image_batch()
    executor = TaskExecutor.create(model, "loop")
    non = evaluate(
        executor, F.cross_entropy, params, [batch], InnerLoop(0.3, 1), True, transductive=False
    )
    trans = evaluate(executor, F.cross_entropy, params, [batch], InnerLoop(0.3, 1), True)
    assert np.allclose(non.losses, trans.losses)  # eval-mode BatchNorm mixes nothing


@pytest.mark.parametrize("transductive", [True, False])
def test_score_every_keeps_the_scored_steps_rows_and_always_the_last(transductive):
    model = Conv4(3, filters=4, image_size=8).double()
    params, batch = split_state(model).params, image_batch()
    executor = TaskExecutor.create(model, "loop")
    args = (executor, F.cross_entropy, params, [batch], InnerLoop(0.3, 5), True)
    every = evaluate(*args, transductive=transductive)
    sparse = evaluate(*args, transductive=transductive, score_every=2)
    assert sparse.steps == (0, 2, 4, 5)  # the last step is scored whatever the stride
    assert np.array_equal(sparse.losses, every.losses[[0, 2, 4, 5]])
    assert np.array_equal(sparse.accuracies, every.accuracies[[0, 2, 4, 5]])
    assert sparse.accuracy(4) == every.accuracy(4) and sparse.loss() == every.loss(5)
    assert [row["step"] for row in sparse.to_dict()["steps"]] == [0, 2, 4, 5]
    assert "| 4 |" in sparse.table() and "| 3 |" not in sparse.table()
    with pytest.raises(ValueError, match="inner step 3 was not scored"):
        sparse.accuracy(3)
    with pytest.raises(ValueError, match="score_every must be an integer >= 1"):
        evaluate(*args, score_every=0)


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_a_diverging_task_scores_inf_and_leaves_the_others_alone(path):
    # A task whose adaptation blows up (here: targets of 1e20 with a large step) used to raise
    # FloatingPointError from the inner loop and end the whole validation, and the training.
    model, batch = MLP(2, 1, (8,)).double(), regression_batch(tasks=3)
    support_y = batch.support_y.clone()
    support_y[1] = 1e20
    bad = type(batch)(batch.support_x, support_y, batch.query_x, batch.query_y)
    params = split_state(model).params
    executor = TaskExecutor.create(model, path)
    inner = InnerLoop(0.5, 6)
    result = evaluate(executor, F.mse_loss, params, [bad], inner, classification=False)
    clean = evaluate(executor, F.mse_loss, params, [batch], inner, classification=False)
    assert result.diverged() == 1 and np.isinf(result.losses[-1, 1])
    assert result.loss().mean == np.inf and result.loss().ci95 == np.inf
    np.testing.assert_allclose(result.losses[:, [0, 2]], clean.losses[:, [0, 2]], rtol=1e-10)
    assert result.to_dict()["steps"][-1]["diverged_tasks"] == 1
    assert "diverged" in result.table() and "diverged_tasks" not in clean.to_dict()["steps"][-1]
