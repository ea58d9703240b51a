"""The experiment workflow: run directory contents, exact resume (also after kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metagrad.config import load_config
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.io import read_jsonl
from metagrad.train.trainer import read_step, resume_run, train
from sinusoid_runs import SINE, TINY

ROOT = Path(__file__).resolve().parents[2]


def tiny(name="maml_10shot", *extra):
    return load_config(ROOT / "configs" / "sinusoid" / f"{name}.toml", [*TINY, *extra])


def weights(run_dir, name="last"):
    return load_checkpoint(run_dir, name)[0]


def test_a_run_directory_has_everything(tmp_path):
    result = train(tiny(), tmp_path / "run")
    run = tmp_path / "run"
    for f in (
        "config.toml",
        "metrics.jsonl",
        "results.json",
        "last.safetensors",
        "best.safetensors",
        "last.state.safetensors",
    ):
        assert (run / f).exists(), f
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(run / "config.toml") == tiny()  # the resolved config round-trips
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [5, 10, 15, 20]
    assert [r["step"] for r in records if r["split"] == "val"] == [10, 20]
    assert result.test.losses.shape == (4, 12)


CARRY = ("algorithm.inner_optimizer=adam", "algorithm.inner_state=carry")


@pytest.mark.parametrize(
    "config,extra", [("maml_10shot", ()), ("reptile_10shot", ()), ("reptile_10shot", CARRY)]
)
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, config, extra):
    train(tiny(config, *extra), tmp_path / "straight", test=False)
    cut = train(tiny(config, *extra), tmp_path / "cut", test=False, max_steps=10)
    assert cut.steps == 10
    resume_run(tmp_path / "cut", test=False)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert steps == [r["step"] for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")]
    # The wall clock of training carries over the interruption: it never goes back.
    walls = [r["wall_s"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")]
    assert walls == sorted(walls) and walls[0] > 0
    if extra:  # the carried inner state went through the checkpoint and on from it
        a, b = (load_checkpoint(tmp_path / r, "last")[1]["learner"] for r in ("straight", "cut"))
        assert a["inner_state"]["t"]["steps"].item() == 20 * 25 * 5  # iterations*tasks*steps
        v_a, v_b = a["inner_state"]["v"], b["inner_state"]["v"]
        assert v_a.keys() == v_b.keys() and all(torch.equal(v_a[k], v_b[k]) for k in v_a)


def test_a_resume_can_extend_the_budget_and_equals_a_run_started_with_it(tmp_path):
    # 20 iterations then 20 more (the first run finished, validated and saved at 20).
    train(tiny("maml_10shot", "train.iterations=40"), tmp_path / "straight", test=False)
    train(tiny(), tmp_path / "short", test=False)
    result = resume_run(tmp_path / "short", ["train.iterations=40"], test=False)
    assert result.steps == 40
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "short")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The run directory records the new budget, so a later plain resume or test agrees.
    assert load_config(tmp_path / "short" / "config.toml").train.iterations == 40
    train_steps = [r["step"] for r in read_jsonl(tmp_path / "short" / "metrics.jsonl")]
    assert train_steps[-1] == 40


@pytest.mark.parametrize(
    "config,overrides,match",
    [
        ("maml_10shot", ["train.outer_lr=0.01"], "cannot change train.outer_lr"),
        ("maml_10shot", ["algorithm.inner_steps=2"], "cannot change algorithm.inner_steps"),
        ("maml_10shot", ["train.iterations=10"], "already run 20 iterations: give at least 20"),
        ("reptile_10shot", ["train.iterations=40"], "anneals its outer learning rate"),
    ],
)
def test_a_resume_refuses_changes_to_what_the_steps_compute(tmp_path, config, overrides, match):
    train(tiny(config), tmp_path / "run", test=False)
    before = (tmp_path / "run" / "config.toml").read_text()
    with pytest.raises(ValueError, match=match):
        resume_run(tmp_path / "run", overrides, test=False)
    assert (tmp_path / "run" / "config.toml").read_text() == before  # nothing rewritten


def test_the_test_of_a_carry_run_starts_from_its_checkpointed_state(tmp_path):
    from metagrad.train.build import build_experiment
    from metagrad.train.testing import run_test

    cfg = tiny("reptile_10shot", *CARRY)
    train(cfg, tmp_path / "run", test=False)
    exp = build_experiment(cfg)
    assert exp.learner.carried is None
    run_test(tmp_path / "run", "best", exp=exp)
    saved = load_checkpoint(tmp_path / "run", "best")[1]["learner"]["inner_state"]
    assert torch.equal(exp.learner.carried["v"]["net.0.weight"], saved["v"]["net.0.weight"])


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    overrides = [*TINY, "train.iterations=60", "train.checkpoint_every=3", "train.val_every=0"]
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "metagrad", "train", str(SINE), *sets, "--no-test"]
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "straight")], check=True, timeout=300, capture_output=True
    )
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is mid-run, past a few checkpoints
        lines = tmp_path / "killed" / "metrics.jsonl"
        if lines.exists() and len(read_jsonl(lines)) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The kill may land inside a save, leaving "last" torn: the resume then starts from
    # "last.prev", and so does read_step.
    killed_at = read_step(tmp_path / "killed")
    assert 0 < killed_at < 60
    subprocess.run(
        [
            sys.executable,
            "-m",
            "metagrad",
            "train",
            "--resume",
            str(tmp_path / "killed"),
            "--no-test",
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_directory_is_never_overwritten(tmp_path):
    train(tiny(), tmp_path / "run", test=False, max_steps=5)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(), tmp_path / "run")


@pytest.mark.parametrize("config", ["pretrained_10shot", "fomaml_10shot", "mean_10shot"])
def test_every_sinusoid_algorithm_trains_and_tests(tmp_path, config):
    result = train(tiny(config), tmp_path / "run")
    assert result.test is not None and result.test.losses.shape[1] == 12


def test_validation_keeps_the_best_checkpoint(tmp_path):
    train(tiny(), tmp_path / "run", test=False)
    val = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "val"]
    best_step = min(val, key=lambda r: r["loss"])["step"]
    assert load_checkpoint(tmp_path / "run", "best")[1]["step"] == best_step


def test_resume_falls_back_to_the_previous_checkpoint_when_a_save_was_cut(tmp_path):
    train(tiny(), tmp_path / "straight", test=False)
    train(tiny(), tmp_path / "cut", test=False, max_steps=15)  # checkpoints at 5, 10, 15
    (tmp_path / "cut" / "last.state.safetensors").unlink()  # as if killed while committing step 15
    resume_run(tmp_path / "cut", test=False)  # resumes from last.prev (step 10)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_inner_batch_size_overrides_the_training_one():
    from metagrad.train.build import build_experiment
    from metagrad.train.testing import evaluate_split

    def test_losses(*extra):
        exp = build_experiment(tiny("reptile_10shot", "eval.tasks=4", *extra))
        return evaluate_split(exp, "test", 4).losses

    full = test_losses()  # training uses the whole support set: so does the test
    assert np.allclose(test_losses("eval.inner_batch_size=10"), full)  # 10 shots: all of it
    assert not np.allclose(test_losses("eval.inner_batch_size=3"), full)


def test_conv4_head_is_a_config_choice():
    from metagrad.train.build import model_for as _model

    omniglot = ROOT / "configs" / "omniglot"
    assert load_config(omniglot / "reptile_5w1s.toml").model.head == "flatten"
    for head, features in [("flatten", 256), ("mean", 64), (None, 64)]:
        extra = [] if head is None else [f"model.head={head}"]
        model = _model(load_config(omniglot / "maml_5w1s.toml", extra), (1, 28, 28))
        assert model.head_kind == (head or "mean") and model.head.weight.shape[1] == features


def test_sinusoid_validation_tasks_have_the_test_shots():
    from metagrad.train.build import build_experiment

    exp = build_experiment(tiny("maml_10shot", "eval.shots=5", "eval.queries=7"))
    assert exp.cfg.task.shots == 10  # trained on 10 points, tested (and validated) on 5
    for split in ("val", "test"):
        batch = exp.fixed(split, 0, 3)
        assert (batch.support_x.shape[1], batch.query_x.shape[1]) == (5, 7)


def test_read_step_falls_back_to_the_previous_checkpoint(tmp_path):
    assert read_step(tmp_path) == 0  # nothing saved yet
    train(tiny(), tmp_path / "run", test=False)  # "last" at 20, "last.prev" at 15
    assert read_step(tmp_path / "run") == 20
    (
        tmp_path / "run" / "last.state.safetensors"
    ).unlink()  # as a kill inside the save of "last" leaves it
    assert read_step(tmp_path / "run") == 15
