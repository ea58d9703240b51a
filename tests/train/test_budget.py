"""The training-time budget (train.time_budget_s): where it stops, what it saves, how a resume
continues it. Every clock is injected: no test depends on how fast this machine is."""

from __future__ import annotations

import itertools

import pytest
import torch

from metagrad.config import load_config
from metagrad.errors import UsageError
from metagrad.train import clock as clock_module
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.clock import Elapsed, RunClock
from metagrad.train.io import read_jsonl
from metagrad.train.trainer import resume_run, train
from sinusoid_runs import SINE, TINY


def tiny(*extra: str):
    return load_config(SINE, [*TINY, "train.budget_clock=cpu", *extra])


@pytest.fixture
def one_second_per_step(monkeypatch):
    """The CPU clock advances 1 s per reading, so each training step is charged exactly 1 s."""
    ticks = itertools.count()
    monkeypatch.setitem(clock_module.CLOCKS, "cpu", lambda: float(next(ticks)))


def test_the_clock_charges_only_the_time_inside_training_steps():
    wall, training = iter([100.0, 103.0, 110.0]), iter([5.0, 7.5])
    clock = RunClock(
        Elapsed(wall=50.0, training=20.0),
        budget=22.0,
        wall_clock=lambda: next(wall),
        training_clock=lambda: next(training),
    )
    assert not clock.spent()
    with clock.training_step():
        pass
    assert clock.now() == Elapsed(wall=53.0, training=22.5)  # 50 before the resume + 3
    assert clock.spent()
    assert clock.now().wall == 60.0
    assert Elapsed.from_state(Elapsed(1.0, 2.0).state()) == Elapsed(1.0, 2.0)
    assert Elapsed.from_state({}) == Elapsed(0.0, 0.0)  # a checkpoint older than the entries


def test_a_spent_budget_stops_validates_saves_and_tests(tmp_path, one_second_per_step, capsys):
    result = train(tiny("train.time_budget_s=7"), tmp_path / "run")
    assert result.steps == 7
    assert result.test is not None  # the final meta-test ran, as at train.iterations
    assert (tmp_path / "run" / "results.json").exists()
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [7]  # validated at the stop, not only at val_every
    assert val[0]["train_s"] == 7.0
    assert [r["step"] for r in records if r["split"] == "train"] == [5, 7]
    state = load_checkpoint(tmp_path / "run", "last")[1]
    assert state["step"] == 7 and state["train_seconds"] == 7.0
    assert "budget (train.time_budget_s = 7) is spent at step 7 of 20" in capsys.readouterr().out


def test_a_resume_with_a_larger_budget_equals_an_uninterrupted_run(tmp_path, one_second_per_step):
    train(tiny("train.time_budget_s=7"), tmp_path / "cut", test=False)
    resumed = resume_run(tmp_path / "cut", ["train.time_budget_s=12"], test=False)
    train(tiny("train.iterations=12"), tmp_path / "whole", test=False)
    assert resumed.steps == 12
    a, b = (load_checkpoint(tmp_path / d, "last")[0] for d in ("cut", "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(tmp_path / "cut", "last")[1]
    assert state["train_seconds"] == 12.0  # the count carried over the resume


def test_a_resume_of_a_spent_budget_trains_no_further_and_says_how(
    tmp_path, one_second_per_step, capsys
):
    train(tiny("train.time_budget_s=3"), tmp_path / "run", test=False)
    capsys.readouterr()
    result = resume_run(tmp_path / "run", test=False)
    assert result.steps == 3
    out = capsys.readouterr().out
    assert "was already spent at step 3 of 20" in out
    assert "--set train.time_budget_s=MORE" in out


def test_no_budget_runs_all_iterations_and_logs_training_time(tmp_path, one_second_per_step):
    result = train(tiny("train.iterations=6", "train.val_every=3"), tmp_path / "run", test=False)
    assert result.steps == 6
    val = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "val"]
    assert [(r["step"], r["train_s"]) for r in val] == [(3, 3.0), (6, 6.0)]


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan"])
def test_a_budget_must_be_a_positive_number_of_seconds(value):
    with pytest.raises(UsageError, match=r"train.time_budget_s.*finite number > 0"):
        tiny(f"train.time_budget_s={value}")


def test_the_budget_clock_is_named(tmp_path):
    with pytest.raises(UsageError, match=r"train.budget_clock.*'wall'.*'cpu'"):
        tiny("train.budget_clock=gpu")


def test_a_resume_may_not_switch_the_budget_clock(tmp_path, one_second_per_step):
    train(tiny("train.iterations=2"), tmp_path / "run", test=False)
    with pytest.raises(UsageError, match="train.budget_clock"):
        resume_run(tmp_path / "run", ["train.budget_clock=wall"], test=False)
