"""The metagrad command: help, list, errors, test, plot, and a corrupted checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metagrad.cli.main import main
from metagrad.config import load_config
from metagrad.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SINE = str(ROOT / "configs" / "sinusoid" / "maml_10shot.toml")
TINY = [
    "--set",
    "train.iterations=12",
    "--set",
    "train.val_every=6",
    "--set",
    "train.val_tasks=8",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "eval.tasks=10",
    "--set",
    "eval.inner_steps=2",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", SINE, *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "command,expected",
    [
        ([], ["train", "test", "list", "plot", "data", "adapt", "pretrained"]),
        (["adapt"], ["--support", "--query", "--steps", "--head", "--out", "--save-adapted"]),
        (["train"], ["--set", "--out", "--resume", "--no-test"]),
        (["test"], ["--checkpoint", "--set", "results.json"]),
        (["plot"], ["--baseline"]),
        (["data", "download"], ["--root", "omniglot"]),
        (["data", "prepare"], ["--root", "--cache", "cub", "mini-imagenet", "fc100"]),
    ],
)
def test_help_is_complete(command, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in expected:
        assert word in out


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "metagrad", "list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "configs/sinusoid/maml_10shot.toml" in out and "reptile" in out


def test_train_prints_the_test_table(run_dir, capsys):
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == 10 and len(results["steps"]) == 3
    assert "best at step" in results["checkpoint"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "train.iteratons=5"], "did you mean 'train.iterations'"),
        (["--set", "train.iterations=abc"], "train.iterations"),
        (["--set", "model.name=conv5"], "conv5"),
        (["--set", "oops"], "oops"),
    ],
)
def test_config_errors_exit_2_with_a_clear_message(args, message, capsys, tmp_path):
    assert main(["train", SINE, *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert not (tmp_path / "r").exists()  # nothing is written for a bad config


def test_test_a_run_with_overrides_keeps_the_runs_own_result(run_dir, capsys):
    own = (run_dir / "results.json").read_text()
    assert main(["test", str(run_dir), "--checkpoint", "last", "--set", "eval.tasks=7"]) == 0
    out = capsys.readouterr().out
    assert "(7 tasks" in out and "results-last-eval.tasks=7.json" in out
    assert json.loads((run_dir / "results-last-eval.tasks=7.json").read_text())["tasks"] == 7
    assert (run_dir / "results.json").read_text() == own  # a variant never overwrites it
    assert main(["test", str(run_dir)]) == 0  # the run's own test writes results.json again
    assert json.loads((run_dir / "results.json").read_text())["tasks"] == json.loads(own)["tasks"]


def test_test_scores_only_the_steps_asked_for(run_dir, capsys):
    args = ["--set", "eval.inner_steps=5", "--set", "eval.score_every=2"]
    assert main(["test", str(run_dir), *args]) == 0
    name = "results-best-eval.inner_steps=5-eval.score_every=2.json"
    steps = json.loads((run_dir / name).read_text())["steps"]
    assert [row["step"] for row in steps] == [0, 2, 4, 5]
    assert "| 4 |" in capsys.readouterr().out


def test_test_a_config_without_a_run_uses_the_untrained_model(tmp_path, capsys):
    cfg = str(ROOT / "configs" / "sinusoid" / "maml_10shot.toml")
    assert main(["test", cfg, "--set", "eval.tasks=9", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["tasks"] == 9 and report["checkpoint"].startswith("untrained")
    # The directory holds the config it was tested with, so it re-derives its number.
    assert load_config(tmp_path / "config.toml").eval.tasks == 9
    assert main(["test", str(tmp_path), "--checkpoint", "untrained"]) == 0
    again = json.loads((tmp_path / "results-untrained.json").read_text())
    assert again["steps"] == report["steps"]


def test_a_corrupted_checkpoint_is_a_clear_error_and_the_previous_one_works(
    run_dir, capsys, tmp_path
):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = (copy / "last.safetensors").read_bytes()
    (copy / "last.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    assert main(["test", str(copy), "--checkpoint", "last"]) == 2
    err = capsys.readouterr().err
    assert "last.safetensors" in err and "last.prev" in err
    assert main(["test", str(copy), "--checkpoint", "last.prev"]) == 0


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a metagrad run directory" in capsys.readouterr().err


def test_resume_with_a_larger_budget_trains_on_and_tests_again(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", str(copy), "--set", "train.iterations=16"]) == 0
    out = capsys.readouterr().out
    assert "train.iterations = 16" in out
    assert load_checkpoint(copy, "last")[1]["step"] == 16
    assert main(["train", "--resume", str(copy), "--set", "train.outer_lr=0.5"]) == 2
    assert "cannot change train.outer_lr" in capsys.readouterr().err


def test_plot_writes_the_figures(run_dir):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run_dir), "--baseline", str(run_dir)]) == 0
    for name in ("learning_curve.png", "adaptation.png"):
        assert (run_dir / name).stat().st_size > 10_000


def test_test_with_a_checkpoint_path(run_dir, tmp_path):
    import shutil

    other = tmp_path / "elsewhere"
    shutil.copytree(run_dir, other)
    assert main(["test", str(run_dir), "--checkpoint", str(other / "last.safetensors")]) == 0
    report = json.loads((run_dir / "results-last.json").read_text())
    assert report["checkpoint"].startswith("last at step")


def test_missing_data_leaves_no_run_directory(tmp_path, capsys):
    omni = str(ROOT / "configs" / "omniglot" / "maml_5w1s.toml")
    out = tmp_path / "run"
    assert (
        main(["train", omni, "--set", f"task.root={tmp_path / 'nothing'}", "--out", str(out)]) == 2
    )
    assert "metagrad data download omniglot" in capsys.readouterr().err
    assert not out.exists()  # so the same command works once the data is there


def test_test_of_a_missing_target(tmp_path, capsys):
    assert main(["test", str(tmp_path / "nope")]) == 2
    assert "does not exist: give a run directory" in capsys.readouterr().err


def test_validation_curves_script_draws_several_runs(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    script = ROOT / "scripts" / "validation_curves.py"
    out = tmp_path / "curves.png"
    args = [sys.executable, str(script), str(run_dir), str(run_dir), "--out", str(out)]
    subprocess.run([*args, "--metric", "loss"], check=True, capture_output=True)
    assert out.stat().st_size > 10_000
    bad = subprocess.run([*args, "--metric", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no validation 'nope' records" in bad.stderr
    timed = [*args, "--metric", "loss", "--x", "train_s", "--label", "algorithm"]
    done = subprocess.run([*timed, "--reach", "0,1e9"], check=True, capture_output=True, text=True)
    assert "| MAML | " in done.stdout and "not reached" in done.stdout  # loss >= 0 at once
    assert " min (iteration " in done.stdout
