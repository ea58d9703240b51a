"""The natural-image benchmark settings (MMFewShot's b105 training episode and test episodes,
Conv4-84 and ResNet12) compute what metagrad computes.

Nothing is timed: tiny widths and 16x16 images, each test a second or so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: ``benchmarks``

from benchmarks.l2l_loader import l2l_available
from benchmarks.measure import check_gradients, compare_predictions
from benchmarks.models import metagrad_model, twin
from benchmarks.peers import build_implementations
from benchmarks.settings import SETTINGS, check_models, make_batch, widths

import metagrad
from benchmarks import compare
from metagrad import TaskBatch

TINY = {"size": 16, "filters": 4, "widths": (2, 3, 4, 5)}
B105 = SETTINGS["b105"].replace(**TINY, tasks=2)
TEST_1S = SETTINGS["test-5w1s"].replace(**TINY, tasks=2)
needs_l2l = pytest.mark.skipif(not l2l_available(), reason="bash benchmarks/setup_peers.sh")


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def unrolled_meta_grad(model, batch: TaskBatch, steps: int, lr: float, first_order: bool):
    """The MAML meta-gradient of a plain ``torch.nn`` model, unrolled by hand."""
    params = dict(model.named_parameters())
    total = [torch.zeros_like(p) for p in params.values()]
    for task in batch:
        phi = params
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, phi, (task.support_x,)), task.support_y)
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=not first_order)
            phi = {k: p - lr * g for (k, p), g in zip(phi.items(), grads)}
        query = F.cross_entropy(functional_call(model, phi, (task.query_x,)), task.query_y)
        for t, g in zip(total, torch.autograd.grad(query / batch.num_tasks, list(params.values()))):
            t += g
    return total


@pytest.mark.parametrize("first_order", [False, True])
def test_resnet12_twin_meta_gradient_equals_metagrad(float64, first_order):
    setting = B105.replace(first_order=first_order)
    ours = metagrad_model(setting, "resnet12")
    theirs = twin(ours, setting, "resnet12")
    assert [n for n, _ in theirs.named_parameters()] == [n for n, _ in ours.named_parameters()]
    batch = make_batch(setting).to(torch.float64)
    maml = metagrad.MAML(
        ours, inner_lr=0.01, inner_steps=setting.steps, first_order=first_order, path="loop"
    )
    maml.backward(batch)
    expected = unrolled_meta_grad(theirs, batch, setting.steps, 0.01, first_order)
    for (name, p), g in zip(ours.named_parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12, msg=name)
    # The inner step matters: at another inner rate the meta-gradient is another one.
    other = unrolled_meta_grad(theirs, batch, setting.steps, 0.1, first_order)
    assert not all(torch.allclose(p.grad, g) for p, g in zip(ours.parameters(), other))


@needs_l2l
def test_learn2learn_on_the_twin_agrees_in_float64(float64):
    batch = make_batch(B105).to(torch.float64)
    for pool in ("resnet12", "max"):
        impls, skipped = build_implementations(B105, pool, metagrad_model(B105, pool), None)
        grads = {i.name: (lambda i=i: i.meta_grad(batch)) for i in impls}
        assert set(grads) == {"metagrad-loop", "metagrad-loop-recompute", "l2l"}, skipped
        checks = check_gradients(grads, "metagrad-loop", 1e-9)
        assert all(c.ok for c in checks.values()), checks


def test_mmfewshot_settings_shapes_and_variants():
    b105, test5 = SETTINGS["b105"], SETTINGS["test-5w5s"]
    batch = make_batch(b105)
    assert batch.support_x.shape == (1, 25, 3, 84, 84) and batch.query_x.shape == (1, 80, 3, 84, 84)
    assert make_batch(SETTINGS["test-5w1s"]).query_y.shape == (1, 75)
    assert (b105.steps, test5.steps, test5.shots, b105.inner_lr) == (2, 5, 5, 0.01)
    assert sum(p.numel() for p in metagrad_model(b105, "resnet12").parameters()) == 12_427_525
    so, _ = build_implementations(
        B105, "resnet12", metagrad_model(B105, "resnet12"), ["metagrad-*"]
    )
    fo_setting = SETTINGS["b105-fo"].replace(**TINY)
    fo, _ = build_implementations(fo_setting, "resnet12", metagrad_model(fo_setting, "resnet12"))
    assert [i.name for i in so] == ["metagrad-loop", "metagrad-loop-recompute"]
    assert [i.name for i in fo if i.family == "metagrad"] == ["metagrad-loop"]
    with pytest.raises(ValueError, match="mode 'eval' is not one of"):
        b105.replace(mode="eval")
    with pytest.raises(ValueError, match=r"--models \['resnet'\]: .* only \['max', 'resnet12'\]"):
        check_models("resnet12,resnet", [b105])
    assert widths("4,8,8,8") == (4, 8, 8, 8)
    with pytest.raises(argparse.ArgumentTypeError, match="four positive channel counts"):
        widths("4,8")


@pytest.mark.parametrize("pool", ["resnet12", "max"])
def test_test_episode_predictions_agree(pool):
    reference = metagrad_model(TEST_1S, pool)
    impls, skipped = build_implementations(TEST_1S, pool, reference)
    by_name = {i.name: i for i in impls}
    expected = {"metagrad-loop", "metagrad-test"} | ({"l2l"} if l2l_available() else set())
    assert set(by_name) == expected, skipped
    batch = make_batch(TEST_1S)
    fns = {n: (lambda i=i: i.outputs(batch)) for n, i in by_name.items()}
    # A wrong episode: the reference's adaptation with one step less.
    fewer = TEST_1S.replace(steps=TEST_1S.steps - 1)
    wrong = build_implementations(fewer, pool, reference, ["metagrad-loop"])[0][0]
    fns["fewer-steps"] = lambda: wrong.outputs(batch)
    checks = check_gradients(fns, "metagrad-loop", 1e-4, compare=compare_predictions)
    for name in expected:
        assert checks[name].ok, (name, checks[name])
    assert not checks["fewer-steps"].ok and checks["fewer-steps"].worst_rel > 1e-4
    # The predictions are those of the adapted model: adaptation changed the query loss.
    before = F.cross_entropy(reference(batch.query_x[0]), batch.query_y[0])
    assert not torch.isclose(by_name["metagrad-loop"].outputs(batch)["loss"][0], before)


def test_compare_predictions_rules():
    ref = {
        "loss": torch.tensor([1.0, 2.0]),
        "accuracy": torch.tensor([0.2, 0.4]),
        "logits": torch.ones(2, 3, 5),
    }
    assert compare_predictions(dict(ref), ref, 1e-4).ok
    assert compare_predictions({"loss": ref["loss"], "accuracy": ref["accuracy"]}, ref, 1e-4).ok
    flipped = {**ref, "accuracy": torch.tensor([0.2, 0.4 + 1 / 75])}
    check = compare_predictions(flipped, ref, 1e-4)
    assert not check.ok and check.worst_tensor == "accuracy"
    assert not compare_predictions({"loss": ref["loss"]}, ref, 1e-4).ok  # no accuracy
    nan = {**ref, "logits": torch.full((2, 3, 5), float("nan"))}
    assert not compare_predictions(nan, ref, 1e-4).ok


def test_compare_cli_runs_the_tiny_mmfewshot_settings(capsys):
    threads = torch.get_num_threads()
    try:
        result = compare.main(
            [
                *("--settings", "b105,test-5w1s", "--models", "resnet12", "--quick"),
                *("--no-memory", "--size", "16", "--widths", "2,3,4,5", "--threads", "1"),
                *("--matmul-size", "64"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    runs = {(r["setting"], r["model"]): r for r in result["runs"]}
    assert set(runs) == {("b105", "resnet12"), ("test-5w1s", "resnet12")}
    assert runs["test-5w1s", "resnet12"]["checked"] == "predictions"
    assert all(r["grad"]["ok"] for run in runs.values() for r in run["impls"].values())
    assert runs["b105", "resnet12"]["setting_fields"]["widths"] == (2, 3, 4, 5)
    out = capsys.readouterr().out
    assert "| pred rel. err | preds |" in out
    assert "| float64 grad rel. err | float64 grads | float32 err vs float64 |" in out
    b105 = runs["b105", "resnet12"]["impls"].values()
    assert all(0 < r["float32_error"] < 1e-3 for r in b105)  # rounding, measured
