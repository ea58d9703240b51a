"""Devices, dtypes and precision (issue 18): checked when the config is read, one line each;
float64 and bf16 runs on this CPU; what a resume may change; which processes share a meta-batch
(:class:`metagrad.train.distributed.Ranks`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from metagrad.config import ConfigError, load_config
from metagrad.train.build import build_experiment, resolve_device
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.distributed import Ranks
from metagrad.train.loop import config_state
from metagrad.train.rundir import check_same_config, resumable
from metagrad.train.trainer import train

ROOT = Path(__file__).resolve().parents[2]
SINE = ROOT / "configs" / "sinusoid" / "maml_10shot.toml"
REPTILE = ROOT / "configs" / "sinusoid" / "reptile_10shot.toml"
TINY = [
    "train.iterations=3",
    "train.meta_batch_size=4",
    "train.val_every=0",
    "train.log_every=1",
    "eval.tasks=4",
]


def _problem(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_unavailable_device_is_one_line_when_the_config_is_read():
    message = _problem(SINE, "train.device=cuda:1")
    assert "'cuda:1' is not available" in message and "--set train.device=cpu" in message
    assert len(message.splitlines()) == 1
    assert "must be" in _problem(SINE, "train.device=gpu")


def test_auto_is_a_device_and_resolves_to_what_torch_has():
    cfg = load_config(SINE, ["train.device=auto"])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device(cfg.train.device).type == expected
    assert resolve_device("cuda", Ranks(1, 2, local_rank=1)) == torch.device("cuda:1")


@pytest.mark.parametrize(
    ("path", "overrides", "words"),
    [
        (SINE, ["train.precision=bf16", "train.dtype=float64"], 'with dtype = "float64"'),
        (SINE, ["train.precision=int8"], "train.precision"),
        (SINE, ["train.dist_timeout_s=0"], "dist_timeout_s: must be a finite number > 0"),
        (SINE, ["train.reduce=sum"], "train.reduce"),
        (REPTILE, ["algorithm.inner_state=carry", "train.reduce=ordered"], "runs the tasks in"),
    ],
)
def test_settings_that_cannot_work_are_refused_when_read(path, overrides, words):
    assert words in _problem(path, *overrides)


def test_a_resume_may_move_a_run_to_another_device_or_reduction_but_not_change_its_numbers():
    for key in ("train.device", "train.reduce", "train.dist_timeout_s"):
        assert resumable(key), key
    for key in ("train.dtype", "train.precision"):
        assert not resumable(key), key


def test_checkpoints_of_older_versions_still_resume(tmp_path):
    cfg = load_config(SINE)
    old = config_state(cfg)["config"]  # as saved before train.dtype & co. existed ...
    old = {k: v for k, v in old.items() if k not in ("train.dtype", "train.precision")}
    old["train.device"] = "'cpu'"  # ... and when a resume could not change the device
    check_same_config(tmp_path, cfg, {"config_hash": "older", "config": old})
    changed = load_config(SINE, ["train.dtype=float64"])
    with pytest.raises(ValueError, match=r"train.dtype \? -> 'float64'"):
        check_same_config(tmp_path, changed, {"config_hash": "older", "config": old})


def test_a_float64_run_computes_in_float64(tmp_path):
    result = train(load_config(SINE, [*TINY, "train.dtype=float64"]), tmp_path / "run")
    weights, _ = load_checkpoint(tmp_path / "run", "last")
    assert all(w.dtype == torch.float64 for w in weights.values())
    assert math.isfinite(result.test.loss().mean)


def test_bf16_autocast_trains_on_the_cpu_close_to_float32_but_not_equal(tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(SINE, [*TINY, f"train.precision={precision}"])
        train(cfg, tmp_path / precision, test=False)
        runs[precision] = load_checkpoint(tmp_path / precision, "last")[0]
    for k, w in runs["fp32"].items():
        assert runs["bf16"][k].dtype == torch.float32  # the parameters stay float32
        assert torch.isfinite(runs["bf16"][k]).all()
        # 3 Adam steps of 1e-3 move a weight by 3e-3 at most: bf16 changes them, a little.
        assert (runs["bf16"][k] - w).abs().max() < 3e-3
    assert any(not torch.equal(runs["bf16"][k], w) for k, w in runs["fp32"].items())


def test_ranks_split_a_meta_batch_into_consecutive_blocks_and_chunks_round_robin():
    blocks = [Ranks(r, 3).block(25) for r in range(3)]
    assert [(b.start, b.stop) for b in blocks] == [(0, 9), (9, 17), (17, 25)]
    assert Ranks(0, 3).counts(25) == [9, 8, 8]
    assert [c for c in range(7) if Ranks(1, 3).owns(c)] == [1, 4]


def test_the_model_is_on_the_configured_device_and_dtype():
    exp = build_experiment(load_config(SINE, [*TINY, "train.dtype=float64"]))
    assert exp.device == torch.device("cpu")
    assert all(p.dtype == torch.float64 for p in exp.model.parameters())
    batch = next(exp.eval_batches("val", 2, 2))
    assert batch.support_x.device == exp.device
