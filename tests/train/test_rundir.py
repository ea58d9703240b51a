"""The run directory's rules as functions: what a resume may change, what counts as a run,
the lock, and stop requests (the command-line cases are in tests/reliability)."""

from __future__ import annotations

import errno
import os
import signal
import struct
from pathlib import Path

import pytest

from metagrad.config import load_config
from metagrad.errors import UsageError
from metagrad.train.monitor import Monitor
from metagrad.train.rundir import (
    check_new_run,
    config_hash,
    config_identity,
    holds_run,
    resumable,
    run_lock,
    stop_requests,
)
from metagrad.train.trainer import RESUMABLE_CHANGES

SINE = Path(__file__).resolve().parents[2] / "configs" / "sinusoid" / "maml_10shot.toml"


def test_one_list_says_what_a_resume_may_change():
    assert "train.iterations" in RESUMABLE_CHANGES
    for key in ("name", "train.val_every", "train.log_every", "train.checkpoint_every"):
        assert resumable(key), key
    for key in ("eval.tasks", "train.threads", "algorithm.path", "algorithm.chunk_size"):
        assert resumable(key), key
    for key in ("seed", "algorithm.inner_lr", "train.outer_lr", "train.val_tasks", "task.shots"):
        assert not resumable(key), key


def test_the_config_hash_ignores_only_what_a_resume_may_change():
    cfg = load_config(SINE)
    same = load_config(
        SINE, ["train.iterations=5", "eval.tasks=3", "name=x", "algorithm.path=loop"]
    )
    assert config_hash(config_identity(cfg)) == config_hash(config_identity(same))
    for change in ("seed=3", "algorithm.inner_lr=0.5", "train.meta_batch_size=2"):
        other = load_config(SINE, [change])
        assert config_hash(config_identity(cfg)) != config_hash(config_identity(other)), change


def test_any_run_file_means_a_run_and_overwrite_deletes_only_those(tmp_path):
    assert not holds_run(tmp_path / "missing") and not holds_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".lock").write_text("")
    assert not holds_run(tmp_path)
    (tmp_path / "last.prev.state.safetensors").write_bytes(b"x")
    assert holds_run(tmp_path)
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_new_run(tmp_path)
    check_new_run(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]


def test_a_lock_is_exclusive_and_a_new_directory_is_removed_if_nothing_was_written(tmp_path):
    run = tmp_path / "run"
    with run_lock(run), pytest.raises(UsageError, match=f"pid {os.getpid()}"), run_lock(run):
        pass
    assert not run.exists()
    with run_lock(run):
        pass  # released: it can be taken again


def test_the_first_stop_signal_is_a_request_the_second_interrupts():
    with stop_requests() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signal == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def read_events(path: Path) -> list:
    """The events of a TensorBoard file (TFRecord: length, its CRC, data, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    data, events, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        events.append(Event.FromString(data[i + 12 : i + 12 + n]))
        i += 12 + n + 4
    return events


def test_tensorboard_events_are_written_synchronously_and_decode(tmp_path):
    monitor = Monitor(tmp_path, total=10, start=3)
    monitor.log(4, "train", {"loss": 0.5, "note": "text"})
    [path] = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    events = read_events(path)  # readable before close: a kill loses no logged step
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 3 and events[1].session_log.status == 1  # purge from step 3
    assert [(e.step, e.summary.value[0].tag) for e in events[2:]] == [(4, "train/loss")]
    assert events[2].summary.value[0].simple_value == 0.5
    monitor.close()


def test_a_full_disk_under_tensorboard_raises_in_the_run_and_never_hangs(tmp_path, monkeypatch):
    import tensorboardX.record_writer as record_writer

    monitor = Monitor(tmp_path, total=10, start=0)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    with pytest.raises(OSError, match="No space"):
        for step in range(20):  # tensorboardX's queue (10) would block here
            monitor.log(step, "train", {"loss": 1.0})
    monitor.close(failing=True)
