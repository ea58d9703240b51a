"""The run directories behind RESULTS.md (results/) re-test to the numbers they report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metagrad.config import load_config
from metagrad.train.testing import run_test

ROOT = Path(__file__).resolve().parents[2]
SINUSOID = sorted((ROOT / "results" / "sinusoid").glob("maml_10shot-*"))
# The runs a shipped initialisation was copied from (the same results.json, byte for byte):
# the suite re-tests the shipped copy (below), the run itself on demand (a 20-way meta-test
# is a minute and more).
SHIPPED = {
    p.read_bytes() for p in (ROOT / "src" / "metagrad" / "pretrained").glob("*/results.json")
}
# Every other supervised run directory behind a RESULTS.md row (the headline re-runs).
SUPERVISED = sorted(
    p.parent
    for p in (ROOT / "results").glob("*/*/results.json")
    if p.parent not in SINUSOID and (p.parent / "config.toml").exists() and p.parts[-3] != "rl"
)
RUNS = [p for p in SUPERVISED if (p / "results.json").read_bytes() not in SHIPPED]
SHIPPED_RUNS = [p for p in SUPERVISED if p not in RUNS]
# The meta-RL rows (issue 20): a locomotion meta-test samples 40 tasks x 20 episodes after each
# of 4 adaptation steps (a minute or more), so they are re-tested on demand too.
RL_RUNS = sorted(p.parent for p in (ROOT / "results" / "rl").glob("*/results.json"))
# The same-budget comparisons (results/<family>/budget_<setting>/<run>/, issue 17): ten and
# more Omniglot meta-tests of a minute each, so re-tested on demand: `pytest -m retest`.
COMPARISONS = sorted(p.parent for p in (ROOT / "results").glob("*/budget_*/*/results.json"))
PAPER = {1: 0.67, 5: 0.38, 10: 0.35}  # MAML paper, Table 2 (K = 5)


def test_the_main_job_runs_are_shipped():
    assert [p.name for p in SINUSOID] == ["maml_10shot-1thread", "maml_10shot-2thread"]


@pytest.mark.parametrize("run", SINUSOID, ids=lambda p: p.name)
def test_a_shipped_sinusoid_run_retests_to_its_reported_numbers(run, tmp_path):
    copy = tmp_path / run.name  # never write into the repository
    shutil.copytree(run, copy)
    reported = json.loads((run / "results.json").read_text())
    result = run_test(copy, "best", cfg=load_config(copy / "config.toml"))
    for row in reported["steps"]:
        got = result.loss(row["step"])
        assert got.mean == pytest.approx(row["loss"]["mean"], rel=1e-6), row["step"]
    for step, paper in PAPER.items():  # meets the paper (the bar)
        assert result.loss(step).mean <= paper
    assert reported["checkpoint"] == "best at step 50000"
    assert np.isfinite(result.losses).all()


def test_every_headline_rerun_is_shipped():
    names = {f"{p.parent.name}/{p.name}" for p in RUNS}
    expected = {"fomaml_10shot", "reptile_10shot", "pretrained_10shot", "mean_10shot"}
    omniglot = {"omniglot/maml_5w1s", "omniglot/maml_5w5s", "omniglot/fomaml_5w1s"}
    assert {f"sinusoid/{n}" for n in expected} | omniglot <= names


@pytest.mark.parametrize("run", RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_shipped_run_retests_to_its_reported_numbers(run, tmp_path):
    retests_to_its_numbers(run, tmp_path)


@pytest.mark.retest
@pytest.mark.parametrize("run", SHIPPED_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_run_behind_a_shipped_initialisation_retests_to_its_numbers(run, tmp_path):
    retests_to_its_numbers(run, tmp_path)


@pytest.mark.retest
@pytest.mark.parametrize("run", COMPARISONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_comparison_run_retests_to_its_reported_numbers(run, tmp_path):
    retests_to_its_numbers(run, tmp_path)


@pytest.mark.retest
@pytest.mark.parametrize("run", RL_RUNS, ids=lambda p: p.name)
def test_a_meta_rl_run_retests_to_its_reported_returns(run, tmp_path):
    retests_to_its_numbers(run, tmp_path)


def retests_to_its_numbers(run: Path, tmp_path: Path) -> None:
    cfg = load_config(run / "config.toml")
    root = getattr(cfg.task, "root", None)
    if root is not None and not (ROOT / root).exists():
        pytest.skip(f"the data of {run.name} ({root}) is not here")
    copy = tmp_path / run.name  # never write into the repository
    shutil.copytree(run, copy)
    reported = json.loads((run / "results.json").read_text())
    has_weights = (run / "best.safetensors").exists()
    checkpoint = "best" if has_weights else "untrained"
    result = run_test(copy, checkpoint, cfg=load_config(copy / "config.toml"))
    for row in reported["steps"]:
        if "return" in row:  # meta-RL: the average return after the step
            got, want = result.mean_return(row["step"]).mean, row["return"]["mean"]
        else:
            got, want = result.loss(row["step"]).mean, row["loss"]["mean"]
        assert got == pytest.approx(want, rel=1e-5), row["step"]


def _shipped():
    from metagrad.train.pretrained import PRETRAINED

    return list(PRETRAINED.values())


@pytest.mark.parametrize("init", _shipped(), ids=lambda i: i.name)
def test_a_shipped_initialisation_loads_offline_and_retests_to_its_listed_numbers(
    init, tmp_path, monkeypatch
):
    import metagrad

    # Offline: any attempt to open a network connection fails the test.
    monkeypatch.setattr("socket.socket.connect", lambda *a: pytest.fail("network used"))
    learner = metagrad.load(init.name)
    assert learner.config.name and "best at step" in learner.source
    copy = tmp_path / init.folder  # the test writes its results: never into the package
    shutil.copytree(init.path, copy)
    cfg = load_config(copy / "config.toml")
    root = getattr(cfg.task, "root", None)
    if root is not None and not (ROOT / root).exists():
        pytest.skip(f"the test data of {init.name} ({root}) is not here")
    reported = json.loads((init.path / "results.json").read_text())
    result = run_test(copy, "best", cfg=cfg)
    for row in reported["steps"]:  # the same fixed tasks: equal to float32 rounding
        assert result.loss(row["step"]).mean == pytest.approx(row["loss"]["mean"], rel=1e-5)
