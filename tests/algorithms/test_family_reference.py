"""The MAML family against hand-unrolled float64 references.

The reference (:func:`unrolled`) writes the inner loop out by hand over the hand-written
networks of ``test_maml_reference`` (no functional_call, no metagrad): each step takes
``torch.autograd.grad(..., create_graph=True)`` of the support loss, moves only the adapted
parameters by their rate (a float, or a tensor: learnable), optionally overrides parameters per
step (per-step BatchNorm), and weighs the query loss after each step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.test_maml_reference import conv4_by_hand, mlp_by_hand
from conftest import assert_rel_close, global_norm, image_batch, regression_batch
from metagrad import MAML
from metagrad.algorithms.head_only import head_only
from metagrad.algorithms.mamlpp import msl_weights
from metagrad.models import MLP, Conv4

TOL = 1e-10


def unrolled(forward, loss, theta, batch, steps, *, adapts, rate, per_step=None, weights=None):
    """The mean over tasks of ``sum_s weights[s] * query loss after step s + 1`` (only the last
    step when ``weights`` is None), written out by hand.

    Args:
        adapts: name -> whether the inner loop moves it (the rest are held).
        rate: (name, step) -> its learning rate at that step.
        per_step: name -> ``[steps, ...]`` values overriding ``theta[name]`` at each step.
    """
    weights = weights or [0.0] * (steps - 1) + [1.0]
    total = 0
    for t in range(batch.num_tasks):
        w = dict(theta)
        task = 0
        for s in range(steps):
            at_s = {**w, **{k: v[s] for k, v in (per_step or {}).items()}}
            inner = loss(forward(at_s, batch.support_x[t]), batch.support_y[t])
            names = [k for k in w if adapts(k)]
            grads = torch.autograd.grad(inner, [w[k] for k in names], create_graph=True)
            w = {**w, **{k: w[k] - rate(k, s) * g for k, g in zip(names, grads)}}
            if weights[s]:
                after = {**w, **{k: v[s] for k, v in (per_step or {}).items()}}
                task = task + weights[s] * loss(forward(after, batch.query_x[t]), batch.query_y[t])
        total = total + task
    return total / batch.num_tasks


CASES = {
    "mlp": (lambda: MLP(2, 1, (5, 4)).double(), mlp_by_hand, F.mse_loss, regression_batch),
    "cnn+bn": (
        lambda: Conv4(3, filters=4, image_size=8).double(),
        conv4_by_hand,
        F.cross_entropy,
        image_batch,
    ),
}


def _grads(meta, tensors: dict) -> dict:
    return dict(zip(tensors, torch.autograd.grad(meta, list(tensors.values()))))


def _check(model_grads: dict, expected: dict) -> None:
    scale = global_norm(expected)
    for k, g in expected.items():
        assert_rel_close(model_grads[k], g, TOL, k, scale)


@pytest.mark.parametrize("selection", ["head", "body"])
@pytest.mark.parametrize("case", CASES)
def test_anil_and_boil_equal_maml_with_the_other_inner_gradients_masked(case, selection):
    make, by_hand, loss, make_batch = CASES[case]
    model, batch = make(), make_batch()
    head = model.head_name + "."
    theta = dict(model.named_parameters())

    def adapts(k: str) -> bool:
        return k.startswith(head) == (selection == "head")

    meta = unrolled(by_hand, loss, theta, batch, 2, adapts=adapts, rate=lambda k, s: 0.3)
    expected = _grads(meta, theta)
    MAML(model, loss, inner_lr=0.3, inner_steps=2, path="loop", inner_params=selection).backward(
        batch
    )
    _check({k: p.grad for k, p in model.named_parameters()}, expected)


class Wrapped(nn.Module):
    """A model that does not name its head: the inner loop runs it whole at every step."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("path", ["loop", "vectorized", "vmap"])
def test_anil_reuses_the_features_and_equals_running_the_whole_model(path):
    # Conv4 names its head: the body's features are computed once per task. Wrapped, it does
    # not, and a glob selects the same head: every step then runs the whole network.
    torch.manual_seed(0)
    cached = Conv4(3, filters=4, image_size=8).double()
    whole = Wrapped(Conv4(3, filters=4, image_size=8).double())
    whole.inner.load_state_dict(cached.state_dict())
    batch = image_batch()
    a = MAML(cached, F.cross_entropy, inner_lr=0.3, inner_steps=3, path=path, inner_params="head")
    b = MAML(
        whole, F.cross_entropy, inner_lr=0.3, inner_steps=3, path=path, inner_params="*.head.*"
    )
    assert head_only(cached, a.params, a.inner_loop())
    assert not head_only(whole, b.params, b.inner_loop())
    out_a, out_b = a.backward(batch), b.backward(batch)
    grads = {k: p.grad for k, p in whole.inner.named_parameters()}
    _check({k: p.grad for k, p in cached.named_parameters()}, grads)
    assert_rel_close(out_a.query_out, out_b.query_out, TOL, "query outputs")


def test_anil_computes_the_body_once_per_task():
    # Counted: with the features cached, the body runs once for the support sets and once for
    # the query sets, whatever the number of inner steps.
    model = Conv4(3, filters=4, image_size=8).double()
    calls = []
    model.features.register_forward_hook(lambda *_: calls.append(1))
    for steps in (1, 4):
        calls.clear()
        MAML(model, inner_lr=0.3, inner_steps=steps, path="loop", inner_params="head").backward(
            image_batch(tasks=2)
        )
        assert len(calls) == 2 * 2  # tasks x (support, query)


@pytest.mark.parametrize("case", CASES)
def test_metasgd_equals_elementwise_rates_by_hand(case):
    make, by_hand, loss, make_batch = CASES[case]
    model, batch = make(), make_batch()
    learner = MAML(model, loss, inner_lr=0.2, inner_steps=2, learn_inner_lr="per_element")
    rates = learner.inner_lr
    with torch.no_grad():  # distinct rates per element, so that a mix-up would show
        for r in rates.values():
            r.mul_(torch.rand_like(r) + 0.5)
    theta = dict(model.named_parameters())
    meta = unrolled(
        by_hand, loss, theta, batch, 2, adapts=lambda k: True, rate=lambda k, s: rates[k]
    )
    expected = _grads(meta, {**theta, **{f"rate {k}": r for k, r in rates.items()}})
    learner.backward(batch)
    got = {k: p.grad for k, p in theta.items()} | {f"rate {k}": r.grad for k, r in rates.items()}
    assert all(r.shape == theta[k].shape for k, r in rates.items())
    _check(got, expected)


def test_mamlpp_lslr_and_per_step_batchnorm_equal_the_hand_unrolled_loop():
    # LSLR: a scalar rate per parameter tensor and step; BNWB: BatchNorm's scale and shift per
    # step, used by that step's support loss and the query loss after it, never adapted.
    make, by_hand, loss, make_batch = CASES["cnn+bn"]
    model, batch = make(), make_batch()
    learner = MAML(
        model,
        loss,
        inner_lr=[0.3, 0.2],
        inner_steps=2,
        learn_inner_lr="per_layer_per_step",
        per_step_bn_weights=True,
        multi_step_loss_iterations=10,
    )
    learner.iteration = 4  # somewhere inside MSL's annealing
    with torch.no_grad():
        for t in learner.per_step.values():
            t.add_(torch.randn_like(t) * 0.1)  # distinct rows per step
    weights = msl_weights(2, 4, 10)
    rates, per_step = learner.inner_lr, learner.per_step
    theta = dict(model.named_parameters())
    meta = unrolled(
        by_hand,
        loss,
        theta,
        batch,
        2,
        adapts=lambda k: k not in per_step,
        rate=lambda k, s: rates[s][k],
        per_step=per_step,
        weights=weights,
    )
    named_rates = {f"rate {s} {k}": r for s, d in enumerate(rates) for k, r in d.items()}
    wanted = {k: v for k, v in theta.items() if k not in per_step}
    expected = _grads(meta, {**wanted, **named_rates, **per_step})
    learner.backward(batch)
    got = {k: theta[k].grad for k in wanted}
    got |= {name: r.grad for name, r in named_rates.items()}
    got |= {k: t.grad for k, t in per_step.items()}
    _check(got, expected)
    assert all(theta[k].grad is None for k in per_step)  # the layers' own weights: unused


def test_msl_equals_the_weighted_sum_of_per_step_maml_objectives():
    make, _, loss, make_batch = CASES["cnn+bn"]
    batch, steps = make_batch(), 3
    torch.manual_seed(0)
    model = make()
    learner = MAML(model, loss, inner_lr=0.3, inner_steps=steps, multi_step_loss_iterations=8)
    learner.iteration = 3
    weights = msl_weights(steps, 3, 8)
    assert weights is not None and abs(sum(weights) - 1) < 1e-12 and weights[0] < 1 / steps
    expected = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for s, w in enumerate(weights, start=1):  # MAML with s steps is the query loss after step s
        per_step = MAML(model, loss, inner_lr=0.3, inner_steps=s).meta_loss(batch).loss
        for k, g in _grads(w * per_step, dict(model.named_parameters())).items():
            expected[k] += g
    learner.backward(batch)
    _check({k: p.grad for k, p in model.named_parameters()}, expected)


def test_msl_anneals_as_the_papers_code_and_ends_at_plain_maml():
    # get_per_step_loss_importance_vector with 5 steps: uniform at the start; after it, only the
    # last step's loss (None).
    assert msl_weights(5, 0, 5000) == [0.2] * 5
    half = msl_weights(5, 2500, 5000)
    assert half[:4] == [pytest.approx(0.1)] * 4 and half[4] == pytest.approx(0.6)
    late = msl_weights(5, 4999, 5000)
    assert late[:4] == [pytest.approx(0.006)] * 4 and late[4] == pytest.approx(1 - 4 * 0.006)
    assert msl_weights(5, 5000, 5000) is None and msl_weights(1, 0, 5000) is None


def test_schedules_in_epochs_hold_each_blocks_value_as_the_papers_code():
    # MAML++'s code computes the importance vector and the derivative order from the epoch
    # (500 iterations): every iteration of epoch e sees the values of its first iteration.
    make, _, loss, _ = CASES["cnn+bn"]
    learner = MAML(
        make(),
        loss,
        inner_lr=0.3,
        inner_steps=5,
        multi_step_loss_iterations=5000,
        first_order_iterations=1000,
        schedule_every=500,
    )
    for epoch in range(11):
        for offset in (0, 1, 499):
            learner.iteration = 500 * epoch + offset
            assert learner.schedule_iteration == 500 * epoch
            assert learner.step_weights() == msl_weights(5, 500 * epoch, 5000)
            assert learner.inner_loop().first_order == (epoch < 2)
    learner.iteration = 4999  # the last iteration of epoch 9: its weights, not iteration 4999's
    assert learner.step_weights()[0] == pytest.approx(0.2 - 9 / 50)


def test_derivative_order_annealing_switches_exactly_at_its_iteration():
    make, _, loss, make_batch = CASES["cnn+bn"]
    batch = make_batch()

    def grads(first_order: bool) -> dict:
        torch.manual_seed(0)
        model = make()
        MAML(model, loss, inner_lr=0.3, inner_steps=2, first_order=first_order).backward(batch)
        return {k: p.grad for k, p in model.named_parameters()}

    fo, so = grads(True), grads(False)
    assert any((fo[k] - so[k]).abs().max() > 1e-6 for k in fo)
    for at, reference in ((0, fo), (4, fo), (5, so), (9, so)):
        torch.manual_seed(0)
        model = make()
        learner = MAML(model, loss, inner_lr=0.3, inner_steps=2, first_order_iterations=5)
        learner.iteration = at
        learner.backward(batch)
        assert learner.iteration == at + 1
        for k, p in model.named_parameters():
            assert torch.equal(p.grad, reference[k]), (at, k)


@pytest.mark.parametrize(
    "options",
    [
        {"inner_params": "head"},
        {"inner_params": "body"},
        {"learn_inner_lr": "per_element"},
        {"learn_inner_lr": "per_layer_per_step", "per_step_bn_weights": True},
    ],
    ids=["anil", "boil", "metasgd", "lslr+bnwb"],
)
def test_recomputed_inner_steps_give_every_family_member_the_same_meta_gradient(options):
    # A recomputed segment passes gradients to its inputs only: the held parameters, learned
    # rates and per-step weights must be among them.
    make, _, loss, make_batch = CASES["cnn+bn"]
    found = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = make()
        learner = MAML(
            model, loss, inner_lr=0.3, inner_steps=4, recompute_inner=recompute, **options
        )
        learner.backward(make_batch())
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        found.append(grads | {k: t.grad for k, t in learner.learned().items()})
    plain, recomputed = found
    assert plain.keys() == recomputed.keys()
    _check(recomputed, plain)
