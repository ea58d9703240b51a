"""The three BatchNorm modes of prediction, against hand-written references (float64)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import image_batch
from metagrad import MAML, TaskBatch
from metagrad.algorithms import InnerLoop, TaskExecutor
from metagrad.algorithms.normalization import predict_with
from metagrad.errors import UsageError
from metagrad.evaluate import evaluate
from metagrad.functional import split_state
from metagrad.models import MLP, Conv4
from metagrad.models.kernels import batch_norm

EPS = 1e-5


def conv4_with_random_affine(ways: int = 3, size: int = 12) -> tuple[Conv4, dict]:
    torch.manual_seed(0)
    model = Conv4(ways, filters=6, image_size=size).double()
    params = split_state(model).params
    g = torch.Generator().manual_seed(3)
    # BatchNorm's affine away from (1, 0), so a wrong statistic cannot hide behind it.
    params = {
        k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) if ".norm." in k else v
        for k, v in params.items()
    }
    return model, params


def conv4_support_reference(params: dict, support: torch.Tensor, query: torch.Tensor):
    """The strided Conv4 unrolled by hand: each block's convolution, then BatchNorm with the
    mean and (biased) variance of the support set's activations for support and query alike."""
    hs, hq = support, query
    for i in range(4):
        w, b = params[f"features.{i}.conv.weight"], params[f"features.{i}.conv.bias"]
        cs = F.conv2d(hs, w, b, stride=2, padding=1)
        cq = F.conv2d(hq, w, b, stride=2, padding=1)
        mean = cs.mean(dim=(0, 2, 3), keepdim=True)
        var = ((cs - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        scale = params[f"features.{i}.norm.weight"].reshape(1, -1, 1, 1)
        shift = params[f"features.{i}.norm.bias"].reshape(1, -1, 1, 1)
        hs = torch.relu((cs - mean) / torch.sqrt(var + EPS) * scale + shift)
        hq = torch.relu((cq - mean) / torch.sqrt(var + EPS) * scale + shift)
    features = hq.mean(dim=(-2, -1))
    return features @ params["head.weight"].T + params["head.bias"]


def test_support_mode_normalises_queries_with_the_support_statistics():
    model, params = conv4_with_random_affine()
    task = image_batch(tasks=1, ways=3, shots=2, queries=3, size=12).task(0)
    executor = TaskExecutor.create(model, "loop")
    got = predict_with(executor, params, task.query_x, "support", task.support_x)
    expected = conv4_support_reference(params, task.support_x, task.query_x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert all(
        b is None
        for b in (m.statistics_mask for m in model.modules() if hasattr(m, "statistics_mask"))
    )


def test_support_mode_answers_each_image_alone_as_in_any_batch():
    model, params = conv4_with_random_affine()
    task = image_batch(tasks=1, ways=3, shots=2, queries=4, size=12).task(0)
    executor = TaskExecutor.create(model, "loop")
    batched = predict_with(executor, params, task.query_x, "support", task.support_x)
    for i in range(task.query_x.shape[0]):
        alone = predict_with(executor, params, task.query_x[i : i + 1], "support", task.support_x)
        torch.testing.assert_close(alone[0], batched[i], rtol=1e-12, atol=1e-12)
    # The transductive answer depends on the batch: the reason for the other modes.
    transductive = predict_with(executor, params, task.query_x[:2])
    assert not torch.allclose(transductive, predict_with(executor, params, task.query_x)[:2])


def test_non_transductive_mode_is_the_support_set_plus_one_query():
    model, params = conv4_with_random_affine()
    task = image_batch(tasks=1, ways=3, shots=2, queries=3, size=12).task(0)
    executor = TaskExecutor.create(model, "loop")
    got = predict_with(executor, params, task.query_x, "non-transductive", task.support_x)
    for i, q in enumerate(task.query_x):
        one = executor.forward(params, torch.cat([task.support_x, q[None]]))[-1]
        torch.testing.assert_close(got[i], one, rtol=1e-12, atol=1e-12)


def test_the_mask_kernel_takes_statistics_from_the_marked_examples_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, 4, 4, generator=g, dtype=torch.float64)  # [tasks, N, C, H, W]
    w, b = torch.rand(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    mask = torch.tensor([True, True, False, True, False, False, False])
    got = batch_norm(x, w, b, spatial_dims=2, mask=mask)
    for t in range(2):
        ref = x[t, mask]
        mean = ref.mean(dim=(0, 2, 3), keepdim=True)
        var = ref.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        expected = (x[t] - mean) / torch.sqrt(var + EPS) * w.reshape(1, 3, 1, 1)
        torch.testing.assert_close(got[t], expected + b.reshape(1, 3, 1, 1))
        # The marked part alone is what the ordinary (unmasked) kernel gives it.
        torch.testing.assert_close(got[t, mask], batch_norm(x[t, mask], w, b, spatial_dims=2))
    with pytest.raises(ValueError, match=r"bool \[7\]"):
        batch_norm(x, w, b, spatial_dims=2, mask=mask[:5])


def test_mlp_batch_norm_takes_the_mask_too():
    torch.manual_seed(0)
    model = MLP(5, 3, hidden=(8, 8), norm="transductive").double()
    params = split_state(model).params
    g = torch.Generator().manual_seed(1)
    support = torch.randn(6, 5, generator=g, dtype=torch.float64)
    query = torch.randn(4, 5, generator=g, dtype=torch.float64)
    executor = TaskExecutor.create(model, "loop")
    batched = predict_with(executor, params, query, "support", support)
    for i in range(4):
        alone = predict_with(executor, params, query[i : i + 1], "support", support)
        torch.testing.assert_close(alone[0], batched[i], rtol=1e-12, atol=1e-12)
    # Predicting the support set itself in this mode is predicting it transductively.
    torch.testing.assert_close(
        predict_with(executor, params, support, "support", support)[:2],
        executor.forward(params, support)[:2],
    )


def test_models_without_batch_statistics_answer_alike_in_every_mode():
    x, s = torch.randn(4, 3), torch.randn(5, 3)
    plain = MLP(3, 2, hidden=(6,))
    running = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)).eval()
    for model in (plain, running):
        executor = TaskExecutor.create(model, "loop")
        params = split_state(model).params
        outs = [predict_with(executor, params, x, m, s) for m in ("transductive", "support")]
        outs.append(predict_with(executor, params, x, "non-transductive", s))
        assert all(torch.equal(o, outs[0]) for o in outs)


def test_torch_batch_norm_with_batch_statistics_cannot_take_the_support_mode():
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6, track_running_stats=False))
    executor = TaskExecutor.create(model, "loop")
    params = split_state(model).params
    x, s = torch.randn(2, 3), torch.randn(5, 3)
    with pytest.raises(UsageError, match="torch.nn BatchNorm computing batch statistics"):
        predict_with(executor, params, x, "support", s)
    assert predict_with(executor, params, x, "non-transductive", s).shape == (2, 6)
    with pytest.raises(UsageError, match="give the task's support_x"):
        predict_with(executor, params, x, "support")
    with pytest.raises(UsageError, match="unknown BatchNorm mode 'supprt'"):
        predict_with(executor, params, x, "supprt", s)


def test_maml_predict_keeps_transductive_and_offers_the_support_mode():
    model, _ = conv4_with_random_affine(size=28)  # one image alone is 2x2 in the last block
    maml = MAML(model, inner_lr=0.1)
    task = image_batch(tasks=1, ways=3, shots=2, queries=3, size=28).task(0)
    phi = maml.adapt(task.support_x, task.support_y, inner_steps=1)
    executor = TaskExecutor.create(model, "loop")
    torch.testing.assert_close(maml.predict(phi, task.query_x), executor.forward(phi, task.query_x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a single image under the support mode: no warning
        one = maml.predict(phi, task.query_x[:1], batch_norm="support", support_x=task.support_x)
    every = maml.predict(phi, task.query_x, batch_norm="support", support_x=task.support_x)
    torch.testing.assert_close(one[0], every[0], rtol=1e-12, atol=1e-12)
    with pytest.warns(UserWarning, match="batch_norm='support'"):
        maml.predict(phi, task.query_x[:1])


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_support_mode_scores_do_not_depend_on_the_other_queries(path):
    # Scoring a task's queries together equals scoring each half alone, in the support mode
    # (each query's answer is its own); transductively it does not.
    model, _ = conv4_with_random_affine()
    params = split_state(model).params
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2, size=12)
    halves = [
        TaskBatch(batch.support_x, batch.support_y, batch.query_x[:, s], batch.query_y[:, s])
        for s in (slice(0, 3), slice(3, 6))
    ]

    def losses(b: TaskBatch, mode: str):
        executor = TaskExecutor.create(model, path)
        inner = InnerLoop(0.1, 2)
        return evaluate(executor, F.cross_entropy, params, [b], inner, True, batch_norm=mode).losses

    whole = losses(batch, "support")
    torch.testing.assert_close(
        torch.tensor(whole),
        torch.tensor((losses(halves[0], "support") + losses(halves[1], "support")) / 2),
    )
    split = (losses(halves[0], "transductive") + losses(halves[1], "transductive")) / 2
    assert not torch.allclose(torch.tensor(losses(batch, "transductive")), torch.tensor(split))
