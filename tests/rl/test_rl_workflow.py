"""The RL experiment workflow: run directory, exact resume, test protocol, config checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metagrad.config import ConfigError, load_config
from metagrad.rl.adaptation import adaptation_returns
from metagrad.rl.maml_trpo import evaluate_adaptation
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.io import read_jsonl
from metagrad.train.rl_build import build_rl_experiment
from metagrad.train.rl_testing import run_rl_test
from metagrad.train.trainer import resume_run, train

ROOT = Path(__file__).resolve().parents[2]
RL = ROOT / "configs" / "rl"
TINY = [
    "task.horizon=15",
    "task.trajectories=4",
    "task.test_tasks=5",
    "model.hidden=[16]",
    "train.iterations=6",
    "train.meta_batch_size=3",
    "train.val_every=2",
    "train.val_tasks=3",
    "train.checkpoint_every=2",
]
TIMES = {"time_sampling", "time_adaptation", "time_conjugate_gradient", "time_line_search"}


def tiny(name: str = "maml_trpo_nav2d", *extra: str):
    return load_config(RL / f"{name}.toml", [*TINY, *extra])


def untimed(records: list[dict]) -> list[dict]:
    timed = ("time", "wall_s", "train_s")
    return [{k: v for k, v in r.items() if not k.startswith(timed)} for r in records]


def test_a_run_directory_has_everything(tmp_path):
    run = tmp_path / "run"
    result = train(tiny(), run)
    for f in (
        "config.toml",
        "metrics.jsonl",
        "results.json",
        "last.safetensors",
        "best.state.safetensors",
    ):
        assert (run / f).exists(), f
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(run / "config.toml") == tiny()
    records = read_jsonl(run / "metrics.jsonl")
    train_rows = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]  # log_every = 1
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 4, 6]
    for r in train_rows:
        assert set(r) >= TIMES and r["kl"] <= 0.01 and np.isfinite(r["return_after"])
        assert sum(r[k] for k in TIMES) <= r["time_total"] + 1e-6
    weights, state = load_checkpoint(run, "best")
    names = [n for n, _ in build_rl_experiment(tiny()).policy.named_parameters()]
    assert sorted(weights) == sorted(names)
    val_rows = [r for r in records if r["split"] == "val"]
    for r in val_rows:  # validation runs the test's 3 steps; its metric is their mean return
        steps = [r[f"return_step{k}"] for k in (1, 2, 3)]
        assert r["return_adapted_mean"] == pytest.approx(np.mean(steps))
        assert r["return_after"] == r["return_step1"]
    best_val = max(r["return_adapted_mean"] for r in val_rows)
    assert state["best_metric"] == pytest.approx(best_val) == result.best_metric
    report = json.loads((run / "results.json").read_text())
    assert report["tasks"] == 5 and [s["step"] for s in report["steps"]] == [0, 1, 2, 3]
    assert report["inner_lr"] == [0.1, 0.05, 0.05] and "best at step" in report["checkpoint"]
    assert result.test.returns.shape == (4, 5)


@pytest.mark.parametrize("config", ["maml_trpo_nav2d", "pretrained_nav2d"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, config):
    torch.set_num_threads(1)
    train(tiny(config), tmp_path / "straight", test=False)
    cut = train(tiny(config), tmp_path / "cut", test=False, max_steps=3)
    assert cut.steps == 3 and load_checkpoint(tmp_path / "cut", "last")[1]["step"] == 3
    resumed = resume_run(tmp_path / "cut", test=False)
    assert resumed.steps == 6
    for name in ("last", "best"):
        (a, sa), (b, sb) = (load_checkpoint(tmp_path / r, name) for r in ("straight", "cut"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert torch.equal(sa["generator"], sb["generator"]) and sa["step"] == sb["step"]
    a, b = (read_jsonl(tmp_path / r / "metrics.jsonl") for r in ("straight", "cut"))
    assert untimed(a) == untimed(b)  # returns, KL, validation: every logged number


@pytest.mark.parametrize("config", ["maml_trpo_cheetah_vel", "maml_trpo_ant_dir"])
def test_mujoco_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, config):
    """2 iterations, then a resume for 2 more, equal 4 straight (MuJoCo stepped in process):
    the resumed process starts with fresh simulator states and must draw the same episodes."""
    pytest.importorskip("mujoco")
    torch.set_num_threads(1)
    mujoco = [
        "task.horizon=8",
        "task.trajectories=2",
        "task.workers=0",
        "model.hidden=[8]",
        "train.iterations=4",
        "train.meta_batch_size=2",
        "train.val_every=2",
        "train.val_tasks=2",
        "train.checkpoint_every=2",
    ]
    cfg = load_config(RL / f"{config}.toml", mujoco)
    train(cfg, tmp_path / "straight", test=False)
    cut = train(cfg, tmp_path / "cut", test=False, max_steps=2)
    assert cut.steps == 2 and load_checkpoint(tmp_path / "cut", "last")[1]["step"] == 2
    assert resume_run(tmp_path / "cut", test=False).steps == 4
    for name in ("last", "best"):
        (a, sa), (b, sb) = (load_checkpoint(tmp_path / r, name) for r in ("straight", "cut"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert torch.equal(sa["generator"], sb["generator"]) and sa["step"] == sb["step"]
    a, b = (read_jsonl(tmp_path / r / "metrics.jsonl") for r in ("straight", "cut"))
    assert len(a) == 6 and untimed(a) == untimed(b)  # 4 train rows, 2 validations


def test_a_different_seed_gives_a_different_run(tmp_path):
    a = train(tiny("maml_trpo_nav2d", "train.iterations=2"), tmp_path / "a", test=False)
    b = train(tiny("maml_trpo_nav2d", "train.iterations=2", "seed=1"), tmp_path / "b", test=False)
    wa, wb = load_checkpoint(a.run_dir, "last")[0], load_checkpoint(b.run_dir, "last")[0]
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pretrained_baseline_trains_without_adaptation(tmp_path):
    result = train(tiny("pretrained_nav2d"), tmp_path / "run")
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert all("return_after" not in r and r["kl"] <= 0.01 for r in rows)
    assert all(r["loss_after"] < r["loss_before"] for r in rows if r["accepted"])
    assert result.test.returns.shape == (4, 5)


def test_per_task_test_returns_average_to_the_library_evaluation():
    cfg = tiny()
    with build_rl_experiment(cfg) as exp:
        theta = exp.initial_theta()
        tasks = exp.family.sample_tasks(4, torch.Generator().manual_seed(3))
        args = (exp.env, exp.policy, theta, tasks, 5)
        ours = adaptation_returns(*args, (0.1, 0.05), 2, generator=torch.Generator().manual_seed(9))
        lib = evaluate_adaptation(
            *args, inner_lr=(0.1, 0.05), steps=2, generator=torch.Generator().manual_seed(9)
        )
    assert ours.shape == (3, 4)
    np.testing.assert_allclose(ours.mean(1), lib, rtol=1e-6)


def test_test_tasks_are_fixed_and_the_untrained_policy_can_be_tested(tmp_path, capsys):
    cfg = tiny()
    a = run_rl_test(tmp_path, "untrained", cfg=cfg)
    b = run_rl_test(tmp_path, "untrained", cfg=cfg)
    assert np.array_equal(a.returns, b.returns)  # same tasks, same episodes
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["checkpoint"].startswith("untrained") and len(report["steps"]) == 4
    out = capsys.readouterr().out
    assert "| step | average return |" in out and "(5 tasks x 4 episodes" in out


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.name=mlp"], "task family 'navigation-2d' has state inputs"),
        (["algorithm.name=maml", "algorithm.inner_lr=0.1"], "'maml' works only on"),
        (["eval.tasks=7"], "task.test_tasks"),
        (["train.outer_lr=0.1"], "train.outer_lr: has no effect on reinforcement-learning"),
        (["eval.score_every=2"], "the return is measured after every adaptation step"),
        (["train.device=cuda"], "RL runs sample on the CPU"),
        (["algorithm.inner_steps=2", "algorithm.inner_lr=[0.1]"], "algorithm.inner_lr"),
        (["algorithm.gamma=1.5"], "algorithm.gamma: must be > 0 and <= 1"),
        (["task.trajectories=0"], "task.trajectories: must be >= 1"),
    ],
)
def test_config_errors_teach(overrides, message):
    with pytest.raises(ConfigError, match="invalid config") as info:
        load_config(RL / "maml_trpo_nav2d.toml", overrides)
    assert message in str(info.value)


def test_mujoco_workers_zero_steps_in_process_and_negative_is_refused():
    cheetah = RL / "maml_trpo_cheetah_vel.toml"
    assert load_config(cheetah, ["task.workers=0"]).task.workers == 0
    with pytest.raises(ConfigError, match="task.workers: must be >= 0, got -1"):
        load_config(cheetah, ["task.workers=-1"])


def test_supervised_tasks_refuse_rl_models_and_algorithms():
    sine = ROOT / "configs" / "sinusoid" / "maml_10shot.toml"
    with pytest.raises(ConfigError, match="'maml_trpo' works only on rl tasks"):
        load_config(sine, ["algorithm.name=maml_trpo"])
    with pytest.raises(ConfigError, match="model 'gaussian_mlp' takes state inputs"):
        load_config(sine, ["model.name=gaussian_mlp", "model.hidden=[40, 40]"])


def test_shipped_configs_have_the_paper_settings():
    cfgs = {p.stem: load_config(p) for p in sorted(RL.glob("*.toml")) if "_reduced" not in p.stem}
    assert set(cfgs) >= {f"maml_trpo_{e}" for e in ("cheetah_vel", "cheetah_dir", "ant_dir")}
    for name, cfg in cfgs.items():
        assert cfg.task.test_tasks == 40 and cfg.eval.inner_steps == 3, name
        assert cfg.eval.inner_lr == (0.1, 0.05, 0.05) and cfg.model.hidden == (100, 100), name
        nav = cfg.task.family == "navigation-2d"
        assert cfg.task.horizon == (100 if nav else 200), name
        assert cfg.train.meta_batch_size == (20 if nav else 40), name
        assert cfg.task.trajectories == (40 if cfg.task.family == "ant-dir" else 20), name
        if cfg.task.family.startswith("half-cheetah"):
            assert cfg.task.frame_skip == 1, name


def _flat(cfg) -> dict:
    out = {}
    for section, values in dataclasses.asdict(cfg).items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


@pytest.mark.parametrize("family", ["cheetah_vel", "cheetah_dir", "ant_vel", "ant_dir"])
def test_reduced_configs_state_every_reduction(family):
    """A reduced config differs from the paper's only in what its header says it reduces."""
    path = RL / f"maml_trpo_{family}_reduced.toml"
    full, reduced = _flat(load_config(RL / f"maml_trpo_{family}.toml")), _flat(load_config(path))
    changed = {k for k in full if full[k] != reduced[k]} - {"name"}
    assert changed, "a reduced config reduces something"
    assert changed <= {
        "train.meta_batch_size",
        "train.iterations",
        "train.val_tasks",
        "train.val_every",
        "algorithm.fisher_tasks",
        "task.trajectories",
    }
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    shown = {None: "all"}
    for key in changed:
        was, now = (shown.get(v, v) for v in (full[key], reduced[key]))
        assert f"{key} {was} -> {now}" in header, key
    assert reduced["task.horizon"] == 200 and reduced["task.test_tasks"] == 40


@pytest.mark.parametrize("config", ["maml_trpo_cheetah_vel", "maml_trpo_ant_dir"])
def test_mujoco_smoke_one_iteration(tmp_path, config):
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    overrides = [
        "task.horizon=5",
        "task.trajectories=2",
        "task.test_tasks=2",
        "task.workers=1",
        "model.hidden=[8]",
        "train.iterations=1",
        "train.meta_batch_size=2",
        "train.val_tasks=2",
    ]
    result = train(load_config(RL / f"{config}.toml", overrides), tmp_path / "run")
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"]
    assert row["time_env_workers"] > 0 and np.isfinite(row["return_after"])
    assert result.test.returns.shape == (4, 2)
