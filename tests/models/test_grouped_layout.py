"""The grouped layout ``[N, tasks*C, H, W]``: its kernels equal the per-task torch.nn calls to
second order (float64), and Conv4 runs every task in it with the grouped convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import assert_rel_close, global_norm
from metagrad.functional import split_state
from metagrad.models import Conv4, kernels

TASKS = 3


def second_order(f, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The gradient of the squared norm of ``f``'s first gradient: MAML's second-order terms."""
    out = f(*inputs)
    g = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    return list(torch.autograd.grad(sum(gi.square().sum() for gi in g), inputs))


def assert_all_close(got: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    scale = global_norm(dict(enumerate(ref)))
    for i, (a, b) in enumerate(zip(got, ref)):
        assert_rel_close(a, b, 1e-10, f"input {i}", scale)


def per_task(x: torch.Tensor, layer) -> torch.Tensor:
    """``layer(task, x_t)`` on each task's slice of ``x [N, tasks*C, ...]``, back in layout."""
    return torch.cat([layer(t, xt) for t, xt in enumerate(x.chunk(TASKS, dim=1))], dim=1)


@pytest.mark.parametrize("in_channels", [1, 2])  # 1: the im2col + matmul route (3x3 patch)
@pytest.mark.parametrize("stride,padding,bias", [(2, 1, True), (1, 0, False)])
def test_grouped_conv2d_equals_per_task_convolutions_to_second_order(
    in_channels, stride, padding, bias
):
    assert (in_channels * 9 <= kernels.BMM_MAX_PATCH) == (in_channels == 1)
    x = torch.randn(4, TASKS * in_channels, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(TASKS, 5, in_channels, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(TASKS, 5, dtype=torch.float64, requires_grad=True)
    inputs = [x, w, b] if bias else [x, w]

    def grouped(x, w, b=None):
        return kernels.grouped_conv2d(x, w, b, stride, padding)

    def reference(x, w, b=None):
        def one(t, xt):
            return F.conv2d(xt, w[t], None if b is None else b[t], stride=stride, padding=padding)

        return per_task(x, one)

    assert torch.allclose(grouped(*inputs), reference(*inputs), atol=1e-12)
    assert_all_close(second_order(grouped, inputs), second_order(reference, inputs))


def test_grouped_batch_norm_equals_per_task_batch_norm_to_second_order():
    x = torch.randn(4, TASKS * 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(TASKS, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(TASKS, 2, dtype=torch.float64, requires_grad=True)

    def reference(x, w, b):
        def one(t, xt):
            return F.batch_norm(xt, None, None, w[t], b[t], training=True)

        return per_task(x, one)

    got = kernels.grouped_batch_norm(x, w, b)
    assert torch.allclose(got, reference(x, w, b), atol=1e-12)
    assert_all_close(
        second_order(kernels.grouped_batch_norm, [x, w, b]), second_order(reference, [x, w, b])
    )


@pytest.mark.parametrize("pool", ["stride", "max"])
def test_conv4_runs_all_tasks_in_the_grouped_layout(pool, monkeypatch):
    model = Conv4(4, filters=3, image_size=16, pool=pool).double()
    params = split_state(model).params
    batched = {k: torch.stack([v + 0.1 * i for i in range(TASKS)]) for k, v in params.items()}
    x = torch.randn(TASKS, 5, 1, 16, 16, dtype=torch.float64)

    def refused(*args):
        raise AssertionError("the task-major grouped kernel ran: the layout was left")

    monkeypatch.setitem(kernels.CONV_IMPLS, "grouped", refused)
    assert kernels.get_conv_impl() == "grouped"
    got = functional_call(model, batched, (x,))
    for t in range(TASKS):
        one = functional_call(model, {k: v[t] for k, v in batched.items()}, (x[t],))
        assert torch.allclose(got[t], one, atol=1e-12)


def test_conv4_leaves_the_grouped_layout_for_a_statistics_mask(monkeypatch):
    """A BatchNorm statistics mask (the "support" mode) takes the general kernels."""
    model = Conv4(4, filters=3, image_size=16).double()
    params = split_state(model).params
    batched = {k: torch.stack([v] * TASKS) for k, v in params.items()}
    mask = torch.tensor([True, True, False, False, False])
    masks = {f"features.{i}.norm.statistics_mask": mask for i in range(4)}
    x = torch.randn(TASKS, 5, 1, 16, 16, dtype=torch.float64)
    calls = []
    grouped = kernels.CONV_IMPLS["grouped"]
    monkeypatch.setitem(kernels.CONV_IMPLS, "grouped", lambda *a: calls.append(1) or grouped(*a))
    got = functional_call(model, {**batched, **masks}, (x,))
    assert len(calls) == 4
    one = functional_call(model, {**params, **masks}, (x[1],))
    assert torch.allclose(got[1], one, atol=1e-12)
