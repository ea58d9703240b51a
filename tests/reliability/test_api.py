"""The catalogue, Python API part (issue 14): every bad argument, batch, model or loss gets one
clear line of the right type, with the config's words where a config key says the same; and
what used to be wrong silently (meta-gradients, buffers, gradients of unused parameters) is
right now. CLI cases use ``--set`` on the tiny sinusoid run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metagrad import MAML, Reptile, TaskBatch, adapt
from metagrad.errors import UsageError
from metagrad.evaluate.protocol import evaluate
from metagrad.functional import InnerLoop
from metagrad.models import MLP
from reliability.catalogue import SINE, TINY

LR_WORDS = "inner_lr must be a finite number > 0"


def batch(tasks=2, support=4, query=3, features=1, dtype=torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tasks, support + query, features, generator=g, dtype=dtype)
    y = x.sum(-1, keepdim=True).sin()
    return TaskBatch(x[:, :support], y[:, :support], x[:, support:], y[:, support:])


def net(features=1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def raises(kind: type[BaseException], *words: str):
    """``pytest.raises`` that also checks the message is one line holding every word."""

    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(kind)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            if exc[0] is None or not issubclass(exc[0], kind):
                return self.ctx.__exit__(*exc)  # fails with pytest's own report
            handled = self.ctx.__exit__(*exc)
            message = str(self.info.value)
            assert "\n" not in message.strip(), message
            for word in words:
                assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
            return handled

    return Check()


# ---------------------------------------------------------------- 1. arguments, both sides
@pytest.mark.parametrize("lr", [-0.1, math.inf, math.nan, "0.1", 0.0, [0.1, math.inf]])
def test_bad_inner_lr_is_refused_by_maml(lr):
    with raises(UsageError, LR_WORDS):
        MAML(net(), F.mse_loss, inner_lr=lr, inner_steps=2)


@pytest.mark.parametrize("steps", [2.5, -1, 0, "1"])
def test_bad_inner_steps_is_refused_by_maml(steps):
    with raises(UsageError, "inner_steps must be an integer >= 1", "got"):
        MAML(net(), F.mse_loss, inner_lr=0.1, inner_steps=steps)


def test_chunk_size_zero_is_refused():
    with raises(UsageError, "chunk_size must be an integer >= 1", "got 0"):
        MAML(net(), F.mse_loss, inner_lr=0.1, chunk_size=0)
    with raises(UsageError, "chunk_size must be an integer >= 1", "got 0"):
        next(batch().chunks(0))


def test_reptile_and_adapt_and_evaluate_use_the_same_rules():
    with raises(UsageError, LR_WORDS, "-1"):
        Reptile(net(), F.mse_loss, inner_lr=-1.0)
    with raises(UsageError, "inner_batch_size must be an integer >= 1"):
        Reptile(net(), F.mse_loss, inner_lr=0.1, inner_batch_size=0)
    params = dict(net().named_parameters())
    with raises(UsageError, LR_WORDS, "inf"):
        adapt(lambda p, d: p["0.weight"].sum(), params, None, inner_lr=math.inf, inner_steps=1)
    with raises(UsageError, LR_WORDS, "nan"):
        InnerLoop(math.nan, 3)  # what evaluate() is given
    with raises(UsageError, "score_every must be an integer >= 1"):
        evaluate(None, F.mse_loss, params, [], InnerLoop(0.1, 1), False, score_every=0)


@pytest.mark.parametrize("value", ["inf", "nan", "-0.1"])
def test_cli_inner_lr_is_refused_with_the_api_words(cli, tmp_path, value):
    out = cli("train", SINE, *TINY, "--set", f"algorithm.inner_lr={value}", "--out", tmp_path / "r")
    out.expect(2, "algorithm.inner_lr", "must be a finite number > 0")
    assert not (tmp_path / "r").exists()


def test_cli_chunk_size_zero_has_the_api_words(cli, tmp_path):
    out = cli("train", SINE, *TINY, "--set", "algorithm.chunk_size=0", "--out", tmp_path / "r")
    out.expect(2, "algorithm.chunk_size", "must be an integer >= 1", "got 0")


def test_cli_test_time_inner_lr_and_reptile_counts_have_the_api_words(cli, tmp_path):
    out = cli("test", SINE, "--set", "eval.inner_lr=inf", "--set", "eval.tasks=2")
    out.expect(2, "eval.inner_lr", "must be a finite number > 0")
    reptile = SINE.replace("maml_10shot", "reptile_10shot")
    out = cli("train", reptile, *TINY, "--set", "algorithm.inner_batch_size=0")
    out.expect(2, "algorithm.inner_batch_size", "must be an integer >= 1", "got 0")


def test_quoted_inner_lr_names_the_string_on_both_sides(cli, tmp_path):
    out = cli("train", SINE, *TINY, "--set", 'algorithm.inner_lr="0.1"', "--out", tmp_path / "r")
    out.expect(2, "algorithm.inner_lr", "got str '0.1'")
    with raises(UsageError, "inner_lr", "got str '0.1'"):
        MAML(net(), F.mse_loss, inner_lr="0.1")


# -------------------------------------------------------------------- 2. non-scalar loss
@pytest.mark.parametrize("path", ["loop", "vectorized", "vmap"])
def test_non_scalar_loss_is_refused_on_every_path(path):
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(8,)).double()
    maml = MAML(model, lambda o, t: (o - t) ** 2, inner_lr=0.1, path=path)
    with raises(UsageError, "the loss must be a scalar per task", "got shape (4, 1)", ".mean()"):
        maml.backward(batch())


# ----------------------------------------------------------------- 3. learnable rates
def test_backward_gives_learnable_inner_rates_their_gradient():
    b, lr = batch(), torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    model = net()
    maml = MAML(model, F.mse_loss, inner_lr=lr, inner_steps=2)
    maml.backward(b)
    via_backward = lr.grad.clone()
    lr.grad = None
    maml.meta_loss(b).loss.backward()
    assert torch.allclose(via_backward, lr.grad, rtol=1e-12, atol=0)
    eps = 1e-6

    def at(rate: float) -> float:
        with torch.no_grad():
            return MAML(model, F.mse_loss, inner_lr=rate, inner_steps=2).meta_loss(b).loss.item()

    fd = (at(0.3 + eps) - at(0.3 - eps)) / (2 * eps)
    assert abs(via_backward.item() - fd) < 1e-6 * max(1.0, abs(fd))


def test_per_parameter_rates_are_supported_and_checked():
    b, model = batch(), net()
    names = [k for k, _ in model.named_parameters()]
    same = MAML(model, F.mse_loss, inner_lr=dict.fromkeys(names, 0.1), inner_steps=2)
    assert torch.allclose(
        same.meta_loss(b).loss,
        MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2).meta_loss(b).loss,
    )
    rates = {k: torch.full((), 0.1, dtype=torch.float64, requires_grad=True) for k in names}
    MAML(model, F.mse_loss, inner_lr=rates, inner_steps=2, recompute_inner=True).backward(b)
    assert all(r.grad is not None and torch.isfinite(r.grad) for r in rates.values())
    with raises(UsageError, "inner_lr gives rates for", "missing", "one rate per adapted"):
        MAML(model, F.mse_loss, inner_lr={"0.weight": 0.1})


# ---------------------------------------------------------------- 4. unused parameters
class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.unused = nn.Linear(1, 1), nn.Linear(1, 1)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("learner", ["recompute", "reptile"])
def test_unused_parameter_gets_no_gradient(learner):
    model = WithUnused().double()
    if learner == "recompute":
        maml = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=3, recompute_inner=True)
    else:
        maml = Reptile(model, F.mse_loss, inner_lr=0.1, inner_steps=3)
    maml.backward(batch())
    assert model.unused.weight.grad is None and model.body.weight.grad is not None


# ------------------------------------------------------------------------ 5. divergence
def test_meta_loss_raises_on_nan_as_backward_does():
    x = batch()
    bad = TaskBatch(x.support_x, x.support_y, x.query_x, x.query_y * math.nan)
    maml = MAML(net(), F.mse_loss, inner_lr=0.1)
    with raises(FloatingPointError, "the meta-loss is nan", "learning rate may be too high"):
        maml.meta_loss(bad)
    with raises(FloatingPointError, "the meta-loss is nan", "learning rate may be too high"):
        maml.backward(bad)


def test_reptile_raises_on_an_overflowing_last_step():
    model = net().float()
    reptile = Reptile(model, F.mse_loss, inner_lr=1e38, inner_steps=1)
    x = batch(dtype=torch.float32)
    far = TaskBatch(x.support_x, x.support_y * 1e3, x.query_x, x.query_y)  # gradients ~1e3
    with raises(FloatingPointError, "the Reptile step is", "learning rate may be too high"):
        reptile.backward(far)
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------ 6. BatchNorm
class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((-1, -2)))


def test_adapt_and_predict_leave_running_buffers_bit_identical():
    torch.manual_seed(0)
    model = Conv().double().train()
    before = {k: v.clone() for k, v in model.named_buffers()}
    maml = MAML(model, F.mse_loss, inner_lr=0.1, path="loop")
    x, y = torch.randn(5, 1, 5, 5, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    phi = maml.adapt(x, y, inner_steps=3)
    maml.predict(phi, x)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k


def test_predict_one_example_under_batch_statistics_warns_once():
    torch.manual_seed(0)
    maml = MAML(Conv().double().train(), F.mse_loss, inner_lr=0.1, path="loop")
    params = dict(maml.params)
    one = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"single example.*predict a batch.*norm=\"running\""):
        maml.predict(params, one)
    with _no_warning():
        maml.predict(params, one)


class _no_warning:
    def __enter__(self):
        import warnings

        self.ctx = warnings.catch_warnings(record=True)
        self.seen = self.ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        assert not self.seen, [str(w.message) for w in self.seen]


# ------------------------------------------------------------------- 7. one line each
def test_zero_tasks():
    x = batch()
    with raises(UsageError, "0 tasks", "at least one task"):
        TaskBatch(x.support_x[:0], x.support_y[:0], x.query_x[:0], x.query_y[:0])


def test_empty_query_set_for_maml():
    x = batch(query=0)
    with raises(UsageError, "query set is empty", "queries >= 1"):
        MAML(net(), F.mse_loss, inner_lr=0.1).backward(x)


@pytest.mark.parametrize("path", ["loop", "vectorized", "vmap"])
def test_wrong_feature_dimension_names_both_shapes(path):
    torch.manual_seed(0)
    model = MLP(1, 1, hidden=(8,)).double() if path == "vectorized" else net(1)
    with raises(UsageError, "each example has shape (3,)", "takes 1 features"):
        MAML(model, F.mse_loss, inner_lr=0.1, path=path).backward(batch(features=3))
    with raises(UsageError, "each example has shape (3,)", "takes 1 features"):
        Reptile(model, F.mse_loss, inner_lr=0.1, path=path).backward(batch(features=3))


def test_model_without_parameters():
    with raises(UsageError, "no parameters with requires_grad=True", "nothing to meta-learn"):
        MAML(nn.Identity(), F.mse_loss, inner_lr=0.1)


@pytest.mark.parametrize("learner", [MAML, Reptile])
def test_loss_that_uses_no_parameter(learner):
    def constant(out, target):
        return (target**2).mean()

    with raises(UsageError, "loss depends on none of the model's parameters", ".detach()"):
        learner(net(), constant, inner_lr=0.1).backward(batch())
    with raises(UsageError, "the inner loss depends on none of the model's parameters"):
        params = dict(net().named_parameters())
        adapt(lambda p, d: torch.zeros(()), params, None, inner_lr=0.1, inner_steps=1)
