"""ANIL, BOIL, Meta-SGD and MAML++ as runs: exact resume with their extra state (learned rates,
per-step BatchNorm, schedules), tests with the learned rates, the shipped configs end to end,
and the one-line refusals of configs that make no sense."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from metagrad.config import load_config
from metagrad.train.build import build_experiment
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.io import read_jsonl
from metagrad.train.supervised import outer_lr
from metagrad.train.testing import run_test
from metagrad.train.trainer import resume_run, train
from reliability.catalogue import SINE, TINY

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "omniglot"
SHORT = [
    "train.iterations=12",
    "train.meta_batch_size=5",
    "train.val_every=6",
    "train.val_tasks=5",
    "train.log_every=3",
    "train.checkpoint_every=3",
    "eval.tasks=6",
    "eval.inner_steps=2",
]
# Every MAML++ switch, with the schedules crossing the cut at step 6: MSL over 9 iterations,
# DA first order for 4, the cosine over the budget.
MAMLPP = [
    "algorithm.inner_steps=2",
    "algorithm.multi_step_loss_iterations=9",
    "algorithm.first_order_iterations=4",
    "model.norm=transductive",
    "train.outer_lr_schedule=cosine",
    "train.min_outer_lr=0.0001",
]
FAMILY = {
    "anil": [],
    "boil": [],
    "metasgd": [],
    "mamlpp": MAMLPP,
}


def sine(algorithm: str, *extra: str):
    return load_config(SINE, [f"algorithm.name={algorithm}", *SHORT, *FAMILY[algorithm], *extra])


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("algorithm", FAMILY)
def test_resume_of_every_family_member_is_bit_identical(tmp_path, algorithm):
    train(sine(algorithm), tmp_path / "straight", test=False)
    train(sine(algorithm), tmp_path / "cut", test=False, max_steps=6)
    resume_run(tmp_path / "cut", test=False)
    (wa, sa), (wb, sb) = (load_checkpoint(tmp_path / r, "last") for r in ("straight", "cut"))
    assert _equal(wa, wb)
    assert _equal(sa["learner"], sb["learner"]) and _equal(sa["optimizer"], sb["optimizer"])
    learner = sa["learner"]
    if algorithm == "metasgd":  # the rates were trained, and went through the checkpoint
        rates = learner["inner_lr"]
        assert rates.keys() and all(not torch.all(r == 0.01) for r in rates.values())
    if algorithm == "mamlpp":
        assert learner["iteration"] == 12
        bn = {f"net.{i}.{w}" for i in (1, 4) for w in ("weight", "bias")}
        assert set(learner["per_step"]) == bn  # BNWB: a scale and shift per step
        assert len(learner["inner_lr"]) == 2 * 6  # 2 steps x (3 weights + 3 biases)
        lrs = [r["lr"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl") if "lr" in r]
        assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3  # cosine, across the cut


def test_the_cosine_schedule_runs_from_outer_lr_to_min_outer_lr():
    cfg = sine("mamlpp")
    t = cfg.train
    assert outer_lr(cfg, 0) == t.outer_lr
    assert math.isclose(outer_lr(cfg, t.iterations // 2), (t.outer_lr + t.min_outer_lr) / 2)
    assert math.isclose(outer_lr(cfg, t.iterations), t.min_outer_lr)


def test_the_cosine_moves_once_per_block_with_schedule_every():
    cfg = sine("mamlpp", "train.iterations=1000", "train.schedule_every=250")
    assert [outer_lr(cfg, s) for s in (0, 1, 249)] == [cfg.train.outer_lr] * 3
    assert outer_lr(cfg, 500) == outer_lr(cfg, 749)
    assert math.isclose(outer_lr(cfg, 500), (cfg.train.outer_lr + cfg.train.min_outer_lr) / 2)
    assert build_experiment(cfg).learner.schedule_every == 250


def test_a_metasgd_test_adapts_with_the_rates_of_its_checkpoint(tmp_path):
    cfg = sine("metasgd")
    train(cfg, tmp_path / "run", test=False)
    saved = load_checkpoint(tmp_path / "run", "best")[1]["learner"]["inner_lr"]
    exp = build_experiment(cfg)  # fresh: every rate at inner_lr
    assert all(torch.all(r == 0.01) for r in exp.learner.inner_lr.values())
    result = run_test(tmp_path / "run", "best", exp=exp)
    assert _equal(exp.learner.state_dict()["inner_lr"], saved)
    # The rates matter: the same weights with the initial rates test differently.
    fresh = build_experiment(cfg)
    fresh.model.load_state_dict(load_checkpoint(tmp_path / "run", "best")[0])
    from metagrad.train.testing import evaluate_split

    assert not (evaluate_split(fresh, "test", 6).losses == result.losses).all()


@pytest.mark.skipif(
    not (DATA / "images_background.npz").exists(), reason="the Omniglot data is not here"
)
@pytest.mark.parametrize(
    "config",
    [f"{a}_{w}" for a in ("anil", "boil", "metasgd", "mamlpp") for w in ("5w1s", "20w1s")],
)
def test_every_shipped_family_config_trains_and_tests(tmp_path, cli, config):
    shrink = [
        f"task.root={DATA}",
        "model.filters=4",
        "train.iterations=2",
        "train.meta_batch_size=2",
        "train.val_every=2",
        "train.val_tasks=2",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "eval.tasks=2",
    ]
    sets = [a for s in shrink for a in ("--set", s)]
    trained = cli("train", config, *sets, "--out", tmp_path / "run", "--no-test")
    assert trained.code == 0, trained.err
    tested = cli("test", tmp_path / "run")
    assert tested.code == 0, tested.err
    assert (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    "extra,words",
    [
        (["algorithm.name=anil", "algorithm.inner_params=body"], ["is always 'head' for anil"]),
        (["algorithm.name=metasgd", "eval.inner_lr=0.1"], ["eval.inner_lr", "learned"]),
        (
            ["algorithm.name=mamlpp", "model.norm=transductive", "eval.inner_steps=9"],
            ["eval.inner_steps", "learned for 5 steps", "at most"],
        ),
        (["algorithm.per_step_bn_stats=true"], ["per_step_bn_stats", 'norm = "running"']),
        (["algorithm.first_order_iterations=5", "algorithm.first_order=true"], ["never does"]),
        (["train.min_outer_lr=0.0001"], ["min_outer_lr", "cosine"]),
        (["train.schedule_every=0"], ["train.schedule_every", "0"]),
        (["algorithm.inner_params=nothing.*"], ["matches none", "net.0.weight", "head"]),
        (["algorithm.inner_params=head", "model.name=mlp"], []),  # the MLP names its head
    ],
)
def test_a_config_that_makes_no_sense_is_one_line(tmp_path, cli, extra, words):
    sets = [a for s in extra for a in ("--set", s)]
    outcome = cli("train", SINE, *TINY, *sets, "--out", tmp_path / "run", "--no-test")
    if not words:
        assert outcome.code == 0, outcome.err
        return
    outcome.expect(2, *words)


def test_adapt_uses_the_learned_rates_a_state_dict_carries():
    # What `metagrad adapt` and shipped initialisations rest on: a fresh learner loaded with
    # another's state_dict adapts exactly as that one does, with its learned rates.
    from metagrad import MAML
    from metagrad.models import MLP

    def learner():
        torch.manual_seed(0)
        return MAML(
            MLP(1, 1, (8,)),
            torch.nn.functional.mse_loss,
            inner_lr=0.1,
            learn_inner_lr="per_element",
        )

    trained, fresh = learner(), learner()
    with torch.no_grad():
        for rate in trained.inner_lr.values():
            rate.copy_(torch.rand_like(rate))
        trained.inner_lr["net.2.weight"].zero_()  # this weight must not move
    x, y = torch.randn(10, 1), torch.randn(10, 1)
    fresh.load_state_dict(trained.state_dict())
    a, b = trained.adapt(x, y), fresh.adapt(x, y)
    assert _equal(a, b)
    assert torch.equal(a["net.2.weight"], trained.params["net.2.weight"])
    assert not torch.equal(a["net.2.bias"], trained.params["net.2.bias"])


def test_head_needs_a_model_that_names_it():
    from metagrad import MAML
    from metagrad.errors import UsageError

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    with pytest.raises(UsageError, match=r"has no head_name and embed\(\).*e\.g\. '2\.\*'"):
        MAML(model, inner_lr=0.1, inner_params="head")
    assert MAML(model, inner_lr=0.1, inner_params="2.*").adapted == {"2.weight", "2.bias"}


def test_metagrad_load_and_a_slim_shipped_copy_adapt_with_the_learned_rates(tmp_path):
    import metagrad
    from metagrad.train.checkpoint import save_checkpoint

    cfg = sine("metasgd")
    train(cfg, tmp_path / "run", test=False)
    weights, state = load_checkpoint(tmp_path / "run", "best")
    # What scripts/ship_pretrained.py keeps: the step and the learner's state.
    (tmp_path / "slim").mkdir()
    (tmp_path / "slim" / "config.toml").write_text((tmp_path / "run/config.toml").read_text())
    slim = {"step": state["step"], "learner": state["learner"]}
    save_checkpoint(tmp_path / "slim", "best", weights, slim)
    x = torch.linspace(-5, 5, 5)[:, None]
    y = torch.sin(x)
    outputs = []
    for source in ("run", "slim"):
        learner = metagrad.load(tmp_path / source)
        rates = learner.algorithm.state_dict()["inner_lr"]
        assert _equal(rates, state["learner"]["inner_lr"])
        assert not all(torch.all(r == 0.01) for r in rates.values())  # they were learned
        outputs.append(learner.adapt(x, y).predict(x).outputs)
    assert torch.equal(outputs[0], outputs[1])
    # With the initial rates the adapted model differs: the learned ones were used.
    exp = build_experiment(cfg)
    exp.model.load_state_dict(weights)
    phi = exp.learner.adapt(x[None], y[None], inner_steps=cfg.eval.inner_steps)
    assert not torch.equal(exp.learner.predict(phi, x[None])[0], outputs[0])
