"""Tests of run-directory persistence: atomic writes, JSONL, state flattening, checkpoints."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random

import numpy as np
import pytest
import safetensors
import torch
from torch import nn

from metagrad.train.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    capture_rng_state,
    intact_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from metagrad.train.io import (
    StateError,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    flatten_state,
    read_jsonl,
    unflatten_state,
)


# ------------------------------------------------------------------------------ helpers
def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def train_steps(model, opt, rng: np.random.Generator, steps: int) -> None:
    """Steps whose data come from torch's and numpy's RNGs, so resuming needs both restored."""
    for _ in range(steps):
        x = torch.randn(16, 3) * float(rng.uniform(0.5, 2.0))
        y = x.sum(dim=1, keepdim=True) + random.gauss(0.0, 1.0)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def snapshot(model, opt, rng, step: int) -> tuple[dict, dict]:
    state = {
        "step": step,
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state({"tasks": rng}),
        "sampler": {"epoch": 1, "order": [3, 1, 2]},
        "best_metric": 0.25,
    }
    return model.state_dict(), state


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def saved_run(tmp_path, steps=(3, 6)):
    """A run directory with 'last' saved at each of ``steps`` (the last one current)."""
    model = make_model()
    for step in steps:
        save_checkpoint(tmp_path, "last", *snapshot_simple(model, step))
    return tmp_path, model


def snapshot_simple(model, step):
    """Weights that differ at every step, and a small state."""
    with torch.no_grad():
        model[0].bias.fill_(step)
    return model.state_dict(), {"step": step, "sampler": {"i": step}, "t": torch.tensor([step])}


# ------------------------------------------------------------------------------------ io
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_failing_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def fail(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_jsonl_appends_and_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1, "loss": 0.5})
    append_jsonl(path, {"step": 2, "loss": math.inf, "name": "ü"})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # the process died mid-append
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [1, 2] and records[1]["loss"] == math.inf
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
        read_jsonl(path)


# ------------------------------------------------------------------------- flatten state
def test_flatten_state_round_trips_exactly():
    state = {
        "ints": {0: {"t": torch.arange(6).reshape(2, 3)}, 1: (1, 2.5, None, True)},
        "floats": [math.nan, -math.inf, -0.0, 1e-300],
        "dtypes": [torch.ones(2, dtype=d) for d in (torch.bfloat16, torch.bool, torch.uint8)],
        "numpy": (np.arange(5, dtype=np.uint32), np.float32(1.5), np.int64(-3)),
        "__dunder__": "needs escaping",
        "big": 2**100 + 1,
        "view": torch.arange(10.0)[::3],
    }
    tensors, tree = flatten_state(state)
    back = unflatten_state(tensors, json.loads(json.dumps(tree)))
    assert back["ints"][1] == (1, 2.5, None, True) and 0 in back["ints"]
    assert torch.equal(back["ints"][0]["t"], state["ints"][0]["t"])
    assert math.isnan(back["floats"][0]) and back["floats"][1:] == [-math.inf, -0.0, 1e-300]
    assert math.copysign(1, back["floats"][2]) == -1
    for a, b in zip(back["dtypes"], state["dtypes"], strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    arr, f32, i64 = back["numpy"]
    assert arr.dtype == np.uint32 and arr.tolist() == [0, 1, 2, 3, 4]
    assert type(f32) is np.float32 and type(i64) is np.int64 and i64 == -3
    assert back["__dunder__"] == "needs escaping" and back["big"] == 2**100 + 1
    assert torch.equal(back["view"], torch.tensor([0.0, 3.0, 6.0, 9.0]))


def test_flatten_state_rejects_unsupported_types_by_path():
    with pytest.raises(StateError, match=r"cannot save state\.a\.0: unsupported type object"):
        flatten_state({"a": [object()]})


# --------------------------------------------------------------------------------- RNG
def test_rng_capture_restore_reproduces_draws(tmp_path):
    gen = np.random.default_rng(42)
    state = capture_rng_state({"tasks": gen})
    first = (random.random(), np.random.rand(), gen.normal(size=3), torch.rand(3))
    # through a checkpoint, as training does
    save_checkpoint(tmp_path, "last", {}, {"step": 0, "rng": state})
    _ = random.random(), np.random.rand(), gen.normal(), torch.rand(1)  # move everything on
    restore_rng_state(load_checkpoint(tmp_path, "last")[1]["rng"], {"tasks": gen})
    again = (random.random(), np.random.rand(), gen.normal(size=3), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1]
    assert np.array_equal(first[2], again[2]) and torch.equal(first[3], again[3])


def test_restore_rng_names_a_missing_generator():
    state = capture_rng_state({"tasks": np.random.default_rng(0)})
    with pytest.raises(CheckpointError, match="no saved state for numpy generator 'val'"):
        restore_rng_state(state, {"val": np.random.default_rng(1)})


# ------------------------------------------------------------------------ checkpoints
def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    model, rng = make_model(), np.random.default_rng(7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    random.seed(7)
    train_steps(model, opt, rng, 3)
    save_checkpoint(tmp_path, "last", *snapshot(model, opt, rng, step=3))
    train_steps(model, opt, rng, 3)  # 6 straight

    fresh, fresh_rng = make_model(seed=99), np.random.default_rng(12345)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2, amsgrad=True)
    weights, state = load_checkpoint(tmp_path, "last", expected=fresh.state_dict())
    fresh.load_state_dict(weights)
    fresh_opt.load_state_dict(state["optimizer"])
    restore_rng_state(state["rng"], {"tasks": fresh_rng})
    assert state["step"] == 3 and state["sampler"] == {"epoch": 1, "order": [3, 1, 2]}
    assert state["best_metric"] == 0.25
    train_steps(fresh, fresh_opt, fresh_rng, 3)

    assert_same_tensors(model.state_dict(), fresh.state_dict())
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        assert_same_tensors(a["state"][i], b["state"][i])


def test_checkpoint_is_two_files_whose_state_names_the_weights(tmp_path):
    run, _ = saved_run(tmp_path, steps=(3,))
    names = sorted(p.name for p in run.iterdir())
    assert names == ["last.safetensors", "last.state.safetensors"]
    with safetensors.safe_open(run / "last.state.safetensors", "pt") as f:
        meta = f.metadata()
    weights = (run / "last.safetensors").read_bytes()
    assert meta["step"] == "3" and json.loads(meta["tree"])["sampler"] == {"i": 3}
    assert meta["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    saved_run(tmp_path, steps=(6,))
    assert intact_checkpoints(run) == {"last": 6, "last.prev": 3}


def test_best_keeps_no_previous_copy(tmp_path):
    model = make_model()
    for step in (2, 4):
        save_checkpoint(tmp_path, "best", *snapshot_simple(model, step))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.safetensors",
        "best.state.safetensors",
    ]
    assert intact_checkpoints(tmp_path) == {"best": 4}


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        run, _ = saved_run(tmp_path, steps=(3,))
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in run.iterdir()} == {"0o640"}


def test_load_never_unpickles(tmp_path, monkeypatch):
    run, _ = saved_run(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    assert load_checkpoint(run, "last")[1]["step"] == 6


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
@pytest.mark.parametrize("file", ["last.safetensors", "last.state.safetensors"])
def test_damaged_file_is_named_and_previous_checkpoint_still_loads(tmp_path, damage, file):
    run, _ = saved_run(tmp_path)
    path = run / file
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run, "last")
    msg = str(info.value)
    problem = {"truncate": "is truncated", "flip_byte": "is corrupt", "delete": "is missing"}
    assert f"{file} {problem[damage]}" in msg
    assert "previous 'last' checkpoint 'last.prev' (step 3) is intact" in msg
    assert "--checkpoint last.prev" in msg and info.value.alternative == "last.prev"
    assert load_checkpoint(run, "last.prev")[1]["sampler"] == {"i": 3}


def test_damaged_state_and_no_alternative(tmp_path):
    run, _ = saved_run(tmp_path, steps=(3,))
    (run / "last.state.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"
    )
    with pytest.raises(CheckpointError, match="last.state.safetensors is corrupt") as info:
        load_checkpoint(run, "last")
    assert "No intact checkpoint is left" in str(info.value) and info.value.alternative is None
    (run / "last.state.safetensors").unlink()
    match = "last.state.safetensors is missing .*a save was interrupted"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(run, "last")


def test_other_intact_checkpoints_are_offered(tmp_path):
    run, model = saved_run(tmp_path, steps=(3,))
    save_checkpoint(run, "best", *snapshot_simple(model, 2))
    (run / "last.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"Checkpoint 'best' \(step 2\) is intact") as info:
        load_checkpoint(run, "last")
    assert info.value.alternative == "best"


REPLACES_PER_SAVE = 4  # weights + state moved aside, weights + state moved into place


@pytest.mark.parametrize("fail_at", range(REPLACES_PER_SAVE))
def test_crash_during_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch, fail_at):
    run, model = saved_run(tmp_path)  # "last" at step 6, "last.prev" at step 3
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) - 1 == fail_at:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(CheckpointWriteError, match="saving checkpoint .last. .* failed"):
        save_checkpoint(run, "last", *snapshot_simple(model, 9))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list(run.glob(".*.tmp"))
    try:
        _, state = load_checkpoint(run, "last")
    except CheckpointError as e:  # "last" itself is mid-replacement: the error points to prev
        assert e.alternative == "last.prev"
        _, state = load_checkpoint(run, e.alternative)
    assert state["step"] == 6
    save_checkpoint(run, "last", *snapshot_simple(model, 12))  # and saving works again
    assert load_checkpoint(run, "last")[1]["step"] == 12
    assert load_checkpoint(run, "last.prev")[1]["step"] in (6, 3)


def test_sibling_files_are_found_by_hash_after_a_torn_move(tmp_path):
    run, _ = saved_run(tmp_path)
    os.replace(run / "last.safetensors", run / "last.prev.safetensors")  # half moved aside
    assert load_checkpoint(run, "last")[1]["step"] == 6


def test_stale_temp_files_are_removed_by_the_next_save(tmp_path):
    run, model = saved_run(tmp_path, steps=(3,))
    (run / ".last.safetensors.abc123.tmp").write_bytes(b"junk from a killed save")
    save_checkpoint(run, "last", *snapshot_simple(model, 4))
    assert not list(run.glob(".*.tmp"))


def test_weights_that_do_not_fit_the_model_are_explained(tmp_path):
    run, _ = saved_run(tmp_path, steps=(3,))
    other = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    with pytest.raises(CheckpointError, match=r"does not fit the model: .*'0.weight' is \[8, 3\]"):
        load_checkpoint(run, "last", expected=other.state_dict())


def test_bad_arguments(tmp_path):
    with pytest.raises(CheckpointError, match="state\\['step'\\] must be the int training step"):
        save_checkpoint(tmp_path, "last", {}, {"sampler": {}})
    with pytest.raises(CheckpointError, match="bad checkpoint name 'a/b'"):
        save_checkpoint(tmp_path, "a/b", {}, {"step": 0})
    with pytest.raises(CheckpointError, match="bad checkpoint name 'last.prev'"):
        save_checkpoint(tmp_path, "last.prev", {}, {"step": 0})
    with pytest.raises(CheckpointError, match="weights\\['w'\\] is a list, not a tensor"):
        save_checkpoint(tmp_path, "last", {"w": [1.0]}, {"step": 0})
    with pytest.raises(CheckpointError, match="cannot save checkpoint 'last': cannot save state"):
        save_checkpoint(tmp_path, "last", {}, {"step": 0, "bad": {1, 2}})
    with pytest.raises(CheckpointError, match="no run directory"):
        load_checkpoint(tmp_path / "nope", "last")
