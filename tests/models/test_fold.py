"""The first block's convolution and BatchNorm folded into one product (metagrad.models.fold)
equal convolution then BatchNorm to second order (float64), per task and shared, and Conv4
runs them folded exactly where the fold applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from conftest import assert_rel_close, global_norm
from metagrad.functional import split_state
from metagrad.models import Conv4, fold, kernels

TASKS = 3


def second_order(f, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The gradient of the squared norm of ``f``'s first gradient: MAML's second-order terms."""
    out = f(*inputs)
    g = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    return list(torch.autograd.grad(sum(gi.square().sum() for gi in g), inputs))


def unfolded(x, w, b, g, beta, stride, padding):
    """Per task: ``F.conv2d`` then ``F.batch_norm`` on the batch's statistics (torch's own)."""
    if w.dim() == 4:
        return F.batch_norm(F.conv2d(x, w, b, stride, padding), None, None, g, beta, True)
    out = []
    for t, xt in enumerate(x.chunk(w.shape[0], dim=1)):
        z = F.conv2d(xt, w[t], None if b is None else b[t], stride, padding)
        out.append(F.batch_norm(z, None, None, None if g is None else g[t], beta[t], True))
    return torch.cat(out, dim=1)


def tensors(tasks: int | None, affine: bool = True) -> list[torch.Tensor | None]:
    lead = () if tasks is None else (tasks,)
    t = 1 if tasks is None else tasks

    def new(*shape, positive=False):
        v = torch.rand(*shape).add(0.5) if positive else torch.randn(*shape)
        return v.double().requires_grad_()

    x = (torch.rand(6, t, 11, 11) > 0.7).double().reshape(6, t, 11, 11)  # ink-like 0/1
    x = x + 0.01 * torch.randn_like(x)
    return [
        x,
        new(*lead, 5, 1, 3, 3),
        new(*lead, 5),
        new(*lead, 5, positive=True) if affine else None,
        new(*lead, 5),
    ]


@pytest.mark.parametrize("tasks", [TASKS, None])  # grouped layout; one task, shared parameters
@pytest.mark.parametrize("stride,padding", [(2, 1), (1, 1), (1, 0)])
def test_the_fold_equals_convolution_then_batch_norm_to_second_order(tasks, stride, padding):
    torch.manual_seed(0)
    x, w, b, g, beta = tensors(tasks)
    params = [w, b, g, beta]

    def folded(*p):
        return fold.conv_batch_norm(x, *p, stride, padding)

    def reference(*p):
        return unfolded(x, *p, stride, padding)

    assert torch.allclose(folded(*params), reference(*params), atol=1e-11)
    got, ref = second_order(folded, params), second_order(reference, params)
    scale = global_norm(dict(enumerate(ref)))
    # The conv weight's second-order terms cancel (BatchNorm makes the loss scale-invariant in
    # it): measured 5e-11 to 3.3e-10 between the fold and torch's BatchNorm, 4e-11 to 1e-10
    # between the fold and a two-pass BatchNorm by hand, and 1.2e-10 to 1.9e-10 between the two
    # BatchNorms, so 1e-9 for it; 1e-15 measured for the others.
    for name, a, r, tol in zip(
        ["weight", "bias", "bn weight", "bn bias"],
        got,
        ref,
        [1e-9, 1e-10, 1e-12, 1e-12],
        strict=True,
    ):
        assert_rel_close(a, r, tol, name, scale)
    assert got[1].abs().max() == 0  # BatchNorm cancels the conv bias: exactly, not nearly


def test_the_fold_without_affine_parameters_or_conv_bias():
    torch.manual_seed(1)
    x, w, _, _, _ = tensors(TASKS)
    got = fold.conv_batch_norm(x, w, None, None, None, 2, 1)
    z = kernels.grouped_conv2d(x, w, None, 2, 1)
    assert torch.allclose(got, F.batch_norm(z, None, None, None, None, True), atol=1e-11)


def test_only_few_channel_inputs_fold():
    assert fold.foldable(torch.zeros(64, 1, 3, 3)) and fold.foldable(torch.zeros(2, 64, 1, 3, 3))
    assert not fold.foldable(torch.zeros(64, 3, 3, 3))  # RGB: 27 values a patch
    assert not fold.foldable(torch.zeros(64, 64, 3, 3))


def test_the_fold_under_bf16_autocast_keeps_its_statistics_in_full_precision():
    torch.manual_seed(2)
    x, w, b, g, beta = (t.detach().float() for t in tensors(TASKS))
    x = x + 50.0  # a large mean: a bf16 covariance would cancel to garbage or a negative variance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fold.conv_batch_norm(x, w, b, g, beta, 2, 1)
    ref = unfolded(x, w, b, g, beta, 2, 1)
    assert torch.isfinite(got).all()
    assert (got.float() - ref).abs().max() < 0.1  # bf16 products: 2-3 significant digits


@pytest.mark.parametrize("grouped", [True, False])  # the vectorised path's layout; the loop's
def test_conv4_folds_its_first_block_alone_and_equals_the_unfolded_network(grouped, monkeypatch):
    model = Conv4(4, filters=6, image_size=16).double()
    params = split_state(model).params
    folds = [block.folds() for block in model.features]
    assert folds == [True, False, False, False]
    x = torch.randn(TASKS, 5, 1, 16, 16, dtype=torch.float64)
    if grouped:
        params = {k: torch.stack([v + 0.1 * i for i in range(TASKS)]) for k, v in params.items()}
        got = functional_call(model, params, (x,))
    else:
        got = torch.stack([functional_call(model, params, (xt,)) for xt in x])
    calls = []
    real = fold.conv_batch_norm
    monkeypatch.setattr(fold, "conv_batch_norm", lambda *a: calls.append(1) or real(*a))
    functional_call(model, {k: v for k, v in params.items()}, (x if grouped else x[0],))
    assert len(calls) == 1  # the first block, once
    monkeypatch.setattr(type(model.features[0]), "folds", lambda self: False)
    if grouped:
        ref = functional_call(model, params, (x,))
    else:
        ref = torch.stack([functional_call(model, params, (xt,)) for xt in x])
    assert torch.allclose(got, ref, atol=1e-11)
