"""Validation asks the test's question: same episodes, inner steps, step sizes and episodes per
step for every shipped config; the selection rule is the documented one."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from metagrad.config import load_config, selection_score, val_metric
from metagrad.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*/*.toml"))
OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"
SUPERVISED = [c for c in CONFIGS if c.parent.name != "rl"]
RL = [c for c in CONFIGS if c.parent.name == "rl"]
NATURAL = ("cub", "mini-imagenet", "tiered-imagenet", "cifar-fs", "fc100")


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_every_shipped_config_is_covered():
    assert len(SUPERVISED) >= 20 and len(RL) >= 6


@pytest.mark.parametrize("path", SUPERVISED, ids=_name)
def test_supervised_validation_runs_the_test_protocol(path, monkeypatch, request, tmp_path):
    from metagrad.train import testing
    from metagrad.train.build import build_experiment

    overrides = ["train.val_tasks=3", "eval.tasks=3"]
    if path.parent.name in NATURAL:  # the fixture caches hold 2 images per class
        cache = request.getfixturevalue("natural_cache")
        overrides += [f"task.cache={cache}", "task.ways=2", "task.shots=1", "task.queries=1"]
        overrides += ["eval.shots=1", "eval.queries=1"]
    if path.parent.name == "folder":
        from natural_fixtures import write_folder

        root = write_folder(tmp_path / "classes", classes=10)
        overrides += [f"task.root={root}", f"task.cache={tmp_path / 'cache'}", "task.ways=2"]
        overrides += ["task.queries=1", "task.image_size=16"]
    if path.parent.name == "omniglot":
        if not (OMNIGLOT / "images_background.npz").exists():
            pytest.skip("the Omniglot data of ../shared/data is not here")
        overrides.append(f"task.root={OMNIGLOT}")
    cfg = load_config(path, overrides)
    exp = build_experiment(cfg)
    seen = {}

    def spy(runner, loss, params, batches, inner, classification, **kw):
        shapes = [(b.support_x.shape[1:], b.query_x.shape[1:]) for b in batches]
        seen[split] = (inner, shapes, kw.pop("seed"), kw)
        raise StopIteration

    monkeypatch.setattr(testing, "evaluate", spy)
    for split in ("val", "test"):
        if cfg.algorithm.name == "mean":  # no adaptation: only the episodes can differ
            assert exp.fixed(split, 0, 3).support_x.shape == exp.fixed("test", 0, 3).support_x.shape
            continue
        with pytest.raises(StopIteration):
            testing.evaluate_split(exp, split, 3)
    if cfg.algorithm.name != "mean":
        val, test = seen["val"], seen["test"]
        assert val[0] == test[0], "inner loop (steps, step sizes, rule) differs"
        assert val[1] == test[1], "episode shapes (shots, queries) differ"
        assert val[3] == test[3], "transductive / batch size / scored steps differ"


@pytest.mark.parametrize("path", RL, ids=_name)
def test_rl_validation_runs_the_test_protocol(path, monkeypatch, tmp_path):
    from metagrad.train import rl_testing as testing

    cfg = load_config(path)
    seen = {}

    def spy(exp, theta, split, tasks, steps, inner_lr, trajs):
        seen[split] = (steps, inner_lr, trajs)
        raise StopIteration

    monkeypatch.setattr(testing, "evaluate_split", spy)
    monkeypatch.setattr(testing, "load_theta", lambda exp, run_dir, ck: ({}, ck))
    fake = SimpleNamespace(cfg=cfg)
    with pytest.raises(StopIteration):
        testing.validate(fake, {})
    with pytest.raises(StopIteration):
        testing.run_rl_test(tmp_path, "best", cfg=cfg, exp=fake)
    assert seen["val"] == seen["test"]


def test_a_different_test_trajectory_count_is_validated_with_too(monkeypatch, tmp_path):
    from metagrad.train import rl_testing as testing

    cfg = load_config(ROOT / "configs/rl/maml_trpo_nav2d.toml", ["task.test_trajectories=7"])
    seen = []
    monkeypatch.setattr(testing, "evaluate_split", lambda *a: seen.append(a[-1]) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        testing.validate(SimpleNamespace(cfg=cfg), {})
    assert seen == [7]


def test_selection_score_rules():
    scores = {0: -3.0, 1: -0.6, 5: -0.4, 10: -0.2}
    assert selection_score(scores, "last") == -0.2
    assert selection_score(scores, "mean") == pytest.approx(-0.4)  # steps 1..K, not step 0
    assert selection_score({0: -3.0}, "mean") == -3.0  # no adaptation: the score before it
    assert selection_score({0: 0.2, 3: 0.9}, "mean") == 0.9


@pytest.mark.parametrize(
    "config, expected",
    [
        ("sinusoid/maml_10shot", "mean"),
        ("omniglot/maml_5w1s", "last"),
        ("rl/maml_trpo_nav2d", "mean"),
    ],
)
def test_auto_metric_follows_what_the_family_reports(config, expected):
    cfg = load_config(ROOT / "configs" / f"{config}.toml")
    assert val_metric(cfg) == expected
    other = "last" if expected == "mean" else "mean"
    assert (
        val_metric(load_config(ROOT / "configs" / f"{config}.toml", [f"train.val_metric={other}"]))
        == other
    )


def test_sinusoid_run_selects_by_the_mean_over_the_test_steps(tmp_path):
    cfg = load_config(
        ROOT / "configs/sinusoid/maml_10shot.toml",
        ["train.iterations=4", "train.val_every=2", "train.val_tasks=20", "eval.tasks=5"],
    )
    result = train(cfg, tmp_path / "run")
    vals = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("split") == "val"
    ]
    assert len(vals) == 2
    best = max(-v["loss_adapted_mean"] for v in vals)
    assert result.best_metric == pytest.approx(best)
    assert all(v["loss_adapted_mean"] != v["loss"] for v in vals)


def test_a_diverged_validation_is_never_the_best():
    assert selection_score({0: -1.0, 1: -float("inf")}, "last") == -float("inf")
    assert selection_score({0: -1.0, 1: float("nan"), 2: -0.5}, "mean") == -float("inf")
    assert -float("inf") < selection_score({0: -9.0, 1: -8.0}, "mean")
