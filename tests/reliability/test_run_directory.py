"""The catalogue of run-directory problems: nothing lost, no stuck runs.

Each case gives the command line (or the API) a bad run directory, a fault (full disk, denied
write, out of memory, divergence) or a stop (Ctrl-C, SIGTERM, kill -9), and checks the exit
code, the one line it prints and that every file good before is byte-identical and loadable.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors
import torch

from metagrad.algorithms.maml_learner import MAML
from metagrad.train.checkpoint import intact_checkpoints, load_checkpoint, state_file
from metagrad.train.io import inject_write_faults
from metagrad.train.rundir import run_lock
from reliability.catalogue import ROOT, SINE, TINY

NO_TEST = [*TINY, "--no-test"]


@pytest.fixture
def run(tmp_path, cli):
    """A finished tiny run (6 steps; 'best' and 'last' at step 6, 'last.prev' at step 3)."""
    out = tmp_path / "run"
    assert cli("train", SINE, *NO_TEST, "--out", out).code == 0
    return out


def checkpoints_load(run_dir: Path, *names: str) -> None:
    found = intact_checkpoints(run_dir)
    for name in names:
        assert name in found, f"{name} not intact in {sorted(found)}"
        weights, _ = load_checkpoint(run_dir, name)
        assert all(torch.isfinite(w).all() for w in weights.values())


# ----------------------------------------------------------------- --out and existing runs
def test_out_pointing_at_a_file(tmp_path, cli, keep):
    target = tmp_path / "file"
    target.write_text("x")
    with keep(tmp_path):
        cli("train", SINE, *NO_TEST, "--out", target).expect(2, "is a file")


def test_out_inside_a_file(tmp_path, cli, keep):
    (tmp_path / "file").write_text("x")
    with keep(tmp_path):
        cli("train", SINE, *NO_TEST, "--out", tmp_path / "file" / "run").expect(2, "a file")


def test_out_in_an_unwritable_place(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root may write anywhere
    cli("train", SINE, *NO_TEST, "--out", tmp_path / "run").expect(2, "not writable")
    assert not (tmp_path / "run").exists()


def test_train_into_an_existing_run_names_both_ways_out(run, cli, keep):
    with keep(run):
        cli("train", SINE, *NO_TEST, "--out", run).expect(
            2, "already holds a run", f"--resume {run}", "--overwrite"
        )
    checkpoints_load(run, "last", "best")


@pytest.mark.parametrize("deleted", ["config.toml", "metrics.jsonl+config.toml"])
def test_a_run_without_its_config_is_still_a_run(run, cli, keep, deleted):
    for name in deleted.split("+"):
        (run / name).unlink()
    with keep(run):
        cli("train", SINE, *NO_TEST, "--out", run).expect(2, "already holds a run")
    checkpoints_load(run, "last", "best")


def test_resume_without_config_does_not_advise_deleting(run, cli, keep):
    (run / "config.toml").unlink()
    with keep(run):
        failure = cli("train", "--resume", run, "--no-test")
    failure.expect(2, "no config.toml", "put back")
    assert "--overwrite" not in failure.err


def test_overwrite_replaces_a_run_and_says_so(run, cli):
    (run / "last.state.safetensors").write_bytes(b"junk")  # damaged: cannot be resumed
    outcome = cli("train", SINE, *NO_TEST, "--out", run, "--overwrite")
    assert outcome.code == 0 and "--overwrite: deleted" in outcome.out
    checkpoints_load(run, "last", "best")


def test_resume_and_overwrite_together_are_refused(run, cli, keep):
    with keep(run):
        cli("train", "--resume", run, "--overwrite").expect(2, "--overwrite", "--resume")


# -------------------------------------------------------- runs stopped before a checkpoint
def test_out_of_memory_at_step_1_leaves_a_resumable_run(tmp_path, cli, monkeypatch):
    def no_memory(self, batch):
        raise MemoryError

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(MAML, "backward", no_memory)
        cli("train", SINE, *NO_TEST, "--out", out).expect(1, "out of memory", "--resume")
    assert (out / "config.toml").exists() and not intact_checkpoints(out)
    resumed = cli("train", "--resume", out, "--no-test")
    assert resumed.code == 0 and "from step 0" in resumed.out
    checkpoints_load(out, "last")


def test_divergence_at_step_1_can_be_retrained_with_overwrite(tmp_path, cli):
    out = tmp_path / "run"
    diverge = ["--set", "algorithm.inner_lr=1e30"]
    cli("train", SINE, *NO_TEST, *diverge, "--out", out).expect(
        1, "nan", "no checkpoint was saved yet", "--overwrite"
    )
    cli("train", SINE, *NO_TEST, "--out", out).expect(2, "--overwrite")
    assert cli("train", SINE, *NO_TEST, "--out", out, "--overwrite").code == 0
    checkpoints_load(out, "last")


def test_divergence_mid_run_leaves_no_diverged_checkpoint(tmp_path, cli, monkeypatch):
    real, calls = MAML.backward, []

    def nan_at_step_5(self, batch):
        out = real(self, batch)
        calls.append(1)
        if len(calls) == 5:
            for p in self.model.parameters():
                p.grad.fill_(float("nan"))
        return out

    monkeypatch.setattr(MAML, "backward", nan_at_step_5)
    out = tmp_path / "run"
    cli("train", SINE, *NO_TEST, "--out", out).expect(
        1, "meta-gradient became nan at step 5", "'last' (step 3)", "outer_lr"
    )
    checkpoints_load(out, "last", "best")


# ---------------------------------------------------------------------- full disk, EACCES
def test_disk_full_before_the_run_starts(tmp_path, cli, keep):
    with keep(tmp_path), inject_write_faults(errno.ENOSPC, after=0):
        cli("train", SINE, *NO_TEST, "--out", tmp_path / "run").expect(
            1, "no space left", "config.toml"
        )


def test_disk_full_at_the_first_save(tmp_path, cli):
    out = tmp_path / "run"
    with inject_write_faults(errno.ENOSPC, after=3):  # config, two metrics lines, then 'best'
        cli("train", SINE, *NO_TEST, "--out", out).expect(
            1, "saving checkpoint 'best'", "no space left", "no checkpoint of this run is intact"
        )
    assert not list(out.glob(".*.tmp"))
    assert cli("train", "--resume", out, "--no-test").code == 0  # restarts from step 0
    checkpoints_load(out, "last", "best")


def test_first_last_too_big_for_the_disk_names_the_intact_best(tmp_path, cli):
    out = tmp_path / "run"
    with inject_write_faults(errno.ENOSPC, after=5):  # ... 'best' (2 files), then 'last'
        cli("train", SINE, *NO_TEST, "--out", out).expect(
            1, "saving checkpoint 'last'", "intact: 'best' (step 3)"
        )
    checkpoints_load(out, "best")


def test_disk_full_mid_run_loses_nothing(run, cli):
    before = {p.name: p.read_bytes() for p in run.glob("*.safetensors")}
    steps = intact_checkpoints(run)
    # Resuming rewrites config.toml and metrics.jsonl and logs two lines; then 'best' fails.
    with inject_write_faults(errno.ENOSPC, after=4):
        cli("train", "--resume", run, "--no-test", "--set", "train.iterations=12").expect(
            1, "saving checkpoint 'best'", "no space left", "'last' (step 6)", f"--resume {run}"
        )
    assert {p.name: p.read_bytes() for p in run.glob("*.safetensors")} == before
    assert intact_checkpoints(run) == steps
    checkpoints_load(run, "last", "best", "last.prev")


def test_a_finished_run_keeps_at_most_last_last_prev_and_best(run):
    checkpoints = sorted(p.name for p in run.glob("*.safetensors"))
    assert checkpoints == [
        "best.safetensors",
        "best.state.safetensors",
        "last.prev.safetensors",
        "last.prev.state.safetensors",
        "last.safetensors",
        "last.state.safetensors",
    ]
    assert not list(run.glob("*.tmp")) and not (run / ".lock.holder").exists()


def test_disk_full_under_tensorboard_is_one_line_and_never_hangs(tmp_path, cli, monkeypatch):
    import tensorboardX.record_writer as record_writer

    real, writes = record_writer.RecordWriter.write, []

    def fills_up(self, data):  # the event file's first records fit, then the disk is full
        writes.append(1)
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", fills_up)
    out = tmp_path / "run"
    cli("train", SINE, *NO_TEST, "--out", out).expect(
        1, "no space left", "intact checkpoints: none yet", f"--resume {out}"
    )
    monkeypatch.undo()
    assert cli("train", "--resume", out, "--no-test").code == 0


def test_permission_denied_mid_write(tmp_path, cli, keep):
    with keep(tmp_path), inject_write_faults(errno.EACCES, after=0):
        cli("train", SINE, *NO_TEST, "--out", tmp_path / "run").expect(2, "permission denied")


# ------------------------------------------------------------------------------ locking
def test_a_locked_run_is_refused_naming_its_holder(run, cli, keep):
    # This process holds the lock: a second lock on the file is refused like another process's.
    with run_lock(run), keep(run):
        cli("train", "--resume", run, "--no-test").expect(
            2, "is in use by", f"pid {os.getpid()}", "since"
        )


def test_overwrite_of_a_locked_run_deletes_nothing(run, cli, keep):
    with run_lock(run), keep(run):
        cli("train", SINE, *NO_TEST, "--out", run, "--overwrite").expect(2, "is in use by")


def test_a_stale_lock_of_a_dead_process_does_not_block(run, cli):
    (run / ".lock").write_text("")
    holder = {"pid": 999999, "host": "gone", "command": "metagrad train", "since": "then"}
    (run / ".lock.holder").write_text(json.dumps(holder))
    resumed = cli("train", "--resume", run, "--no-test", "--set", "train.iterations=7")
    assert resumed.code == 0, resumed.err
    assert load_checkpoint(run, "last")[1]["step"] == 7


# ------------------------------------------------------------------ what a resume may change
def test_resume_refuses_a_new_seed(run, cli, keep):
    with keep(run):
        cli("train", "--resume", run, "--set", "seed=3").expect(2, "cannot change seed")


def test_resume_refuses_a_hand_edited_config(run, cli, keep):
    path = run / "config.toml"
    path.write_text(path.read_text().replace("inner_lr = 0.01", "inner_lr = 0.5"))
    with keep(run):
        cli("train", "--resume", run, "--no-test").expect(
            2, "differs from the config", "algorithm.inner_lr 0.01 -> 0.5"
        )


def test_resume_may_change_the_evaluation(run, cli):
    outcome = cli("train", "--resume", run, "--no-test", "--set", "eval.tasks=5")
    assert outcome.code == 0, outcome.err


def craft_state(run_dir: Path, **changes) -> None:
    """Rewrite 'last''s state with ``changes``, its checksums recomputed: only the range
    checks stand between it and the resume."""
    path = run_dir / "last.state.safetensors"
    with safetensors.safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    tree = {**json.loads(meta["tree"]), **changes}
    weights = (run_dir / "last.safetensors").read_bytes()
    path.write_bytes(state_file("last", tree["step"], tensors, tree, weights))


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"step": 10**12}, "step 1000000000000 is not in 0..6"),
        ({"step": -1}, "step -1 is not in"),
        ({"step": 7}, "step 7 is not in 0..6"),
        ({"best_metric": {"__float__": "nan"}}, "best_metric nan"),
        ({"optimizer": 5}, "does not fit this run"),
        ({"sampler": [1, 2]}, "does not fit this run"),
    ],
    ids=[
        "huge-step",
        "negative-step",
        "step-beyond-iterations",
        "nan-best",
        "bad-optimizer",
        "bad-sampler",
    ],
)
def test_a_crafted_state_is_refused_clearly(run, cli, keep, changes, words):
    craft_state(run, **changes)
    with keep(run):
        cli("train", "--resume", run, "--no-test").expect(2, "checkpoint state", words)


# -------------------------------------------------------------- stops in a real process
def start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "metagrad.cli.main", "train", SINE, "--out", str(out)]
    argv += ["--set", "train.iterations=100000", "--set", "train.log_every=1", "--no-test"]
    argv += ["--set", "train.val_every=0", "--set", "train.checkpoint_every=20", *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_steps(out: Path, proc: subprocess.Popen, steps: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        path = out / "metrics.jsonl"
        if path.exists() and path.read_text().count("\n") >= steps:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {steps}: {proc.communicate()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_saves_last_and_exits_130(tmp_path, sig):
    out = tmp_path / "run"
    proc = start(out)
    wait_for_steps(out, proc, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert proc.returncode == 130, err.decode()
    assert len(lines) == 1 and "saved checkpoint 'last'" in lines[0], lines
    assert f"--resume {out}" in lines[0]
    step = load_checkpoint(out, "last")[1]["step"]
    assert f"at step {step}" in lines[0] and step >= 3


def test_kill_9_then_resume(tmp_path, cli):
    out = tmp_path / "run"
    proc = start(out)
    wait_for_steps(out, proc, 25)  # past the first 'last' (step 20)
    proc.kill()
    proc.communicate(timeout=60)
    done = intact_checkpoints(out)["last"]
    # The dead process's lock does not block; finishing at the saved step tests quickly.
    outcome = cli("train", "--resume", out, "--set", f"train.iterations={done}", "--no-test")
    assert outcome.code == 0, outcome.err
    checkpoints_load(out, "last")
