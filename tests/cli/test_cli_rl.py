"""The metagrad command on RL experiments: train, test (run, checkpoint, config), resume, plot."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from metagrad.cli.main import main
from metagrad.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
NAV = str(ROOT / "configs" / "rl" / "maml_trpo_nav2d.toml")
PRETRAINED = str(ROOT / "configs" / "rl" / "pretrained_nav2d.toml")
TINY = [
    f"--set={o}"
    for o in (
        "task.horizon=15",
        "task.trajectories=4",
        "task.test_tasks=6",
        "model.hidden=[16]",
        "train.iterations=4",
        "train.meta_batch_size=3",
        "train.val_every=2",
        "train.val_tasks=3",
    )
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_rl")
    assert main(["train", NAV, *TINY, "--out", str(root / "maml")]) == 0
    assert main(["train", PRETRAINED, *TINY, "--out", str(root / "pretrained")]) == 0
    return root


def steps_of(run: Path) -> list[dict]:
    return json.loads((run / "results.json").read_text())["steps"]


def test_train_writes_the_run_and_tests_it_on_fixed_tasks(runs):
    run = runs / "maml"
    for f in ("config.toml", "metrics.jsonl", "best.safetensors", "last.safetensors"):
        assert (run / f).exists(), f
    report = json.loads((run / "results.json").read_text())
    assert report["tasks"] == 6 and report["trajectories"] == 4
    assert [s["step"] for s in report["steps"]] == [0, 1, 2, 3]
    assert all({"mean", "ci95"} == set(s["return"]) for s in report["steps"])


def test_test_a_run_prints_the_table_and_repeats_exactly(runs, capsys):
    run = runs / "maml"
    before = steps_of(run)
    assert main(["test", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| step | average return |" in out and "best at step" in out
    assert steps_of(run) == before  # fixed tasks, fixed episodes
    assert main(["test", str(run), "--checkpoint", "last", "--set", "task.test_tasks=3"]) == 0
    assert json.loads((run / "results-last-task.test_tasks=3.json").read_text())["tasks"] == 3


def test_test_a_config_evaluates_a_randomly_initialised_policy(tmp_path, capsys):
    out = tmp_path / "random"
    assert main(["test", NAV, *TINY, "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["checkpoint"].startswith("untrained") and len(report["steps"]) == 4


def test_resume_of_a_finished_run_only_tests(runs, capsys):
    assert main(["train", "--resume", str(runs / "pretrained")]) == 0
    assert "meta-test of pretrained-nav2d" in capsys.readouterr().out


def test_resume_can_extend_an_rl_run(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "maml"
    shutil.copytree(runs / "maml", run)
    assert main(["train", "--resume", str(run), "--set", "train.iterations=6"]) == 0
    assert "train.iterations = 6" in capsys.readouterr().out
    assert load_checkpoint(run, "last")[1]["step"] == 6


@pytest.mark.parametrize(
    "config,args,message",
    [
        (NAV, ["--set", "model.name=mlp"], "has state inputs"),
        (NAV, ["--set", "eval.tasks=7"], "task.test_tasks"),
        (NAV, ["--set", "task.frame_skip=2"], "navigation-2d' has no field 'frame_skip'"),
        (
            str(ROOT / "configs" / "sinusoid" / "maml_10shot.toml"),
            ["--set", "algorithm.name=maml_trpo"],
            "'maml_trpo' works only on rl tasks",
        ),
    ],
)
def test_config_errors_exit_2_with_a_clear_message(config, args, message, capsys, tmp_path):
    assert main(["train", config, *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert not (tmp_path / "r").exists()


def test_plot_draws_the_rl_figures_with_baselines(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    random = tmp_path / "random"
    assert main(["test", NAV, *TINY, "--set", "name=random-nav2d", "--out", str(random)]) == 0
    args = ["plot", str(runs / "maml"), "--baseline", str(runs / "pretrained")]
    assert main([*args, "--baseline", str(random)]) == 0
    out = capsys.readouterr().out
    for name in ("return_vs_iteration", "return_vs_steps", "timing", "trajectories"):
        assert (runs / "maml" / f"{name}.png").stat().st_size > 0 and f"{name}.png" in out


def test_list_shows_the_rl_configs_and_variants(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "configs/rl/maml_trpo_ant_dir.toml" in out
    assert "meta-RL:" in out and "maml_trpo, pretrained_rl" in out  # algorithms by group
    assert "gaussian_mlp" in out and "navigation-2d" in out


MUJOCO_TINY = [
    f"--set={o}"
    for o in (
        "task.horizon=5",
        "task.trajectories=2",
        "task.test_tasks=2",
        "model.hidden=[8]",
        "train.iterations=1",
        "train.meta_batch_size=2",
        "train.val_tasks=2",
    )
]


def test_locomotion_baselines_draw_figure_5_with_readable_names(tmp_path, monkeypatch):
    """MAML, the pretrained config and a random initialisation of a locomotion family, through
    train / test / plot, end on one return-vs-steps figure with the paper's points."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("mujoco")
    from metagrad.cli import rl_plots

    rl = ROOT / "configs" / "rl"
    maml, pretrained, random = (tmp_path / n for n in ("maml", "pretrained", "random"))
    for config, out in (("maml_trpo", maml), ("pretrained", pretrained)):
        assert (
            main(["train", str(rl / f"{config}_cheetah_vel.toml"), *MUJOCO_TINY, "--out", str(out)])
            == 0
        )
    test_random = ["test", str(rl / "maml_trpo_cheetah_vel.toml"), *MUJOCO_TINY]
    assert main([*test_random, "--set", "name=random-cheetah-vel", "--out", str(random)]) == 0
    figures = {}

    def keep(fig, plt, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(rl_plots, "save_figure", keep)
    args = ["plot", str(maml), "--baseline", str(pretrained), "--baseline", str(random)]
    assert main(args) == 0
    (ax,) = figures["return_vs_steps.png"].axes
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == [
        "MAML (paper)",
        "oracle (paper)",
        "MAML",
        "pretrained (multi-task)",
        "random initialisation",
    ]
    paper = [line for line in ax.get_lines() if line.get_label() == "MAML (paper)"]
    assert list(paper[0].get_ydata()) == list(rl_plots.PAPER["half-cheetah-vel"][0])

    # scripts/figure5.py: the paper's four panels from results/rl's layout, one colour per kind.
    results = tmp_path / "results"
    results.mkdir()
    for run, name in ((maml, ""), (pretrained, "pretrained_"), (random, "random_")):
        (results / f"{name}cheetah_vel").symlink_to(run)
    (results / "random_cheetah_dir").symlink_to(random)  # a panel with the baseline alone
    figure5 = runpy.run_path(str(ROOT / "scripts" / "figure5.py"))["figure5"]
    monkeypatch.setitem(figure5.__globals__, "save_figure", keep)
    figure5(results, tmp_path / "figure5.png")
    vel, direction, *ant = figures["figure5.png"].axes
    assert [ax.get_title() for ax in (vel, direction, *ant)] == [
        "half-cheetah-vel",
        "half-cheetah-dir",
        "ant-vel",
        "ant-dir",
    ]
    for ax, colors in ((vel, ["C0", "C1", "C2"]), (direction, ["C2"])):  # the random's: C2
        assert [c.lines[0].get_color() for c in ax.containers] == colors
    assert [t.get_text() for ax in ant for t in ax.texts] == ["not run yet"] * 2
