"""Built-in models: per-task and task-batched forwards agree; kernels equal torch.nn's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import assert_rel_close, global_norm
from metagrad.functional import split_state
from metagrad.models import MODELS, BatchNorm, Conv4, build_model, kernels
from metagrad.models.conv4 import ConvBlock

BUILD = {
    "mlp": dict(in_features=4, out_features=3, hidden=(8, 8), norm="transductive"),
    "conv4": dict(ways=3, filters=4, image_size=16),
    "resnet12": dict(ways=3, in_channels=1, widths=(2, 3, 3, 4)),
}
INPUT = {"mlp": (6, 4), "conv4": (6, 1, 16, 16), "resnet12": (6, 1, 16, 16)}


def test_every_registered_model_is_covered():
    assert set(BUILD) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_task_batched_forward_equals_per_task_forward(name):
    model = build_model(name, **BUILD[name]).double()
    params = split_state(model).params
    # Different parameters per task, so a mix-up between tasks would show.
    per_task = {k: torch.stack([v + 0.1 * i for i in range(3)]) for k, v in params.items()}
    x = torch.randn(3, *INPUT[name], dtype=torch.float64)
    batched = functional_call(model, per_task, (x,))
    for t in range(3):
        one = functional_call(model, {k: v[t] for k, v in per_task.items()}, (x[t],))
        assert torch.allclose(batched[t], one, atol=1e-12)


@pytest.mark.parametrize("impl", sorted(kernels.CONV_IMPLS))
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_per_task_convolution_kernels(impl, stride, padding):
    x, w, b = torch.randn(3, 4, 2, 9, 9), torch.randn(3, 5, 2, 3, 3), torch.randn(3, 5)
    previous = kernels.get_conv_impl()
    kernels.set_conv_impl(impl)
    try:
        got = kernels.conv2d(x, w, b, stride, padding)
    finally:
        kernels.set_conv_impl(previous)
    for t in range(3):
        ref = F.conv2d(x[t], w[t], b[t], stride=stride, padding=padding)
        assert torch.allclose(got[t], ref, atol=1e-5)


@pytest.mark.parametrize("spatial", [0, 2])
def test_batch_norm_equals_torch_batch_statistics(spatial):
    x = torch.randn(7, 4, *([5, 5] if spatial else []), dtype=torch.float64)
    w, b = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    ref = F.batch_norm(x, None, None, w, b, training=True)
    assert torch.allclose(kernels.batch_norm(x, w, b, spatial), ref, atol=1e-12)
    per_task = kernels.batch_norm(
        torch.stack([x, x + 3.0]), torch.stack([w, w]), torch.stack([b, b]), spatial
    )
    assert torch.allclose(per_task[0], ref) and torch.allclose(per_task[1], ref)


def test_transductive_batch_norm_is_the_same_in_eval_mode():
    bn = BatchNorm(3)
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(bn.train()(x), bn.eval()(x))
    assert not list(bn.buffers())


def test_conv4_matches_the_reference_parameter_count():
    # BASELINE.md's max-pool Conv4 for 5-way Omniglot has 112,261 parameters.
    model = Conv4(5, filters=64, image_size=28, pool="max")
    assert sum(p.numel() for p in model.parameters()) == 112_261
    assert Conv4(5, pool="stride")(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    assert Conv4(5, in_channels=3, filters=32, image_size=84, pool="max").head.in_features == 800


def test_unknown_model_and_policy_are_refused():
    with pytest.raises(ValueError, match="unknown model 'conv5'"):
        build_model("conv5")
    with pytest.raises(ValueError, match="unknown BatchNorm policy 'group'"):
        Conv4(5, norm="group")


@pytest.mark.parametrize("negative", [False, True])
def test_block_equals_conv_bn_relu_maxpool_to_second_order(negative):
    block = ConvBlock(2, 4, "transductive", "max").double()
    if negative:  # negative BatchNorm scales flip which element a window's max picks
        with torch.no_grad():
            block.norm.weight[::2] *= -1
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    params = dict(block.named_parameters())

    def reference(p):
        z = F.conv2d(x, p["conv.weight"], p["conv.bias"], padding=1)
        z = F.batch_norm(z, None, None, p["norm.weight"], p["norm.bias"], training=True)
        return F.max_pool2d(torch.relu(z), 2)

    def fused(p):
        return functional_call(block, p, (x,))

    assert torch.allclose(fused(params), reference(params), atol=1e-12)
    for f in (fused, reference):  # second order: gradient of a gradient norm
        g = torch.autograd.grad(f(params).square().sum(), list(params.values()), create_graph=True)
        gg = torch.autograd.grad(sum(gi.square().sum() for gi in g), list(params.values()))
        if f is fused:
            got = gg
        else:
            ref = gg
    scale = global_norm(dict(enumerate(ref)))
    for name, a, b in zip(params, got, ref):
        assert_rel_close(a, b, 1e-10, name, scale)
