"""Heads for new tasks of any number of classes: the body's features, zero and Proto-MAML."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metagrad.algorithms import TaskExecutor
from metagrad.algorithms.head_init import features, with_head
from metagrad.errors import UsageError
from metagrad.functional import split_state
from metagrad.models import MLP, Conv4, ResNet12, head_of


def images(n: int, seed: int = 0, size: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)


def test_the_head_is_the_final_linear_layer():
    assert head_of(Conv4(5, filters=4, image_size=12)) == "head"
    assert head_of(ResNet12(5, widths=(2, 2, 2, 2))) == "head"
    assert head_of(MLP(4, 3, hidden=(8, 8))) == "net.4"
    named = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    named.head_name = "0"
    assert head_of(named) == "0"
    with pytest.raises(UsageError, match="has no nn.Linear"):
        head_of(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("model", ["conv4", "mlp"])
def test_features_are_the_heads_inputs(model):
    torch.manual_seed(0)
    if model == "conv4":
        net = Conv4(5, filters=4, image_size=12).double()
        x = images(6)
        expected = net.features(x).mean(dim=(-2, -1))
    else:
        net = MLP(144, 5, hidden=(8, 8), norm="transductive", input_dims=3).double()
        x = images(6)
        expected = net.net[:-1](x)
    executor = TaskExecutor.create(net, "loop")
    params = split_state(net).params
    got = features(executor, params, head_of(net), x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_prototype_head_is_proto_maml_and_classifies_by_the_nearest_prototype():
    torch.manual_seed(0)
    net = Conv4(5, filters=4, image_size=12).double()
    executor, params = TaskExecutor.create(net, "loop"), split_state(net).params
    x, y = images(8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    new = with_head("prototypes", executor, params, "head", x, y, ways=4)
    h = features(executor, params, "head", x)
    mu = torch.stack([h[y == c].mean(0) for c in range(4)])  # [ways, d]
    torch.testing.assert_close(new["head.weight"], 2 * mu)
    torch.testing.assert_close(new["head.bias"], -(mu**2).sum(1))
    # logits = 2 mu.h - |mu|^2 = |h|^2 - |h - mu|^2: the nearest prototype wins.
    logits = executor.forward(new, x)
    nearest = torch.cdist(h, mu).argmin(1)
    assert torch.equal(logits.argmax(1), nearest)
    torch.testing.assert_close(logits - (h**2).sum(1, keepdim=True), -(torch.cdist(h, mu) ** 2))
    assert all(torch.equal(new[k], v) for k, v in params.items() if not k.startswith("head."))


@pytest.mark.parametrize("ways", [3, 5, 20, 30])
def test_heads_for_any_number_of_classes(ways):
    torch.manual_seed(0)
    net = Conv4(5, filters=16, image_size=12).double()  # 16 features tell 30 images apart
    executor, params = TaskExecutor.create(net, "loop"), split_state(net).params
    x, y = images(ways, seed=ways), torch.arange(ways)
    for kind in ("zero", "prototypes"):
        new = with_head(kind, executor, params, "head", x, y, ways)
        assert new["head.weight"].shape == (ways, 16) and new["head.bias"].shape == (ways,)
        out = executor.forward(new, x)
        assert out.shape == (ways, ways)
    assert torch.equal(
        with_head("zero", executor, params, "head", x, y, ways)["head.weight"],
        torch.zeros(ways, 16, dtype=torch.float64),
    )
    # One image per class: each is its own prototype, nearest to itself.
    proto = with_head("prototypes", executor, params, "head", x, y, ways)
    assert torch.equal(executor.forward(proto, x).argmax(1), y)
    if ways == 5:
        assert with_head("trained", executor, params, "head", x, y, ways) == params
    else:
        with pytest.raises(UsageError, match=f"head of 5 classes, but the task has {ways}"):
            with_head("trained", executor, params, "head", x, y, ways)


def test_bad_heads_are_clear():
    net = Conv4(5, filters=4, image_size=12).double()
    executor, params = TaskExecutor.create(net, "loop"), split_state(net).params
    x, y = images(4), torch.tensor([0, 0, 2, 2])
    with pytest.raises(
        UsageError, match=r"every class 0..2 in the support set, which has \[2, 0, 2\]"
    ):
        with_head("prototypes", executor, params, "head", x, y, 3)
    with pytest.raises(UsageError, match="unknown head 'proto'"):
        with_head("proto", executor, params, "head", x, y, 3)
    frozen = {k: v for k, v in params.items() if not k.startswith("head.")}
    with pytest.raises(UsageError, match="no adaptable weight"):
        with_head("zero", executor, frozen, "head", x, y, 3)
