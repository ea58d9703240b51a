"""Catalogue: inputs from files and the command line (issue 14), and a new user's complaints.

Each case gives one bad input and asserts the exit code, one line on standard error naming the
problem, and that the files there before are byte-identical afterwards. Omniglot cases use a
few tiny characters: they fail (as they must) before anything is trained.
"""

from __future__ import annotations

import builtins
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metagrad.cli.main import main
from metagrad.data.omniglot import load_omniglot, preprocess, read_omniglot_npz
from metagrad.errors import UsageError
from reliability.catalogue import ROOT, SINE, TINY

OMNI = "omniglot/maml_5w1s"


def paper(chars: int, seed: int = 0) -> np.ndarray:
    """``[chars, 2, 21, 21]`` drawings, True = paper, about 90% paper as Omniglot's."""
    return np.random.default_rng(seed).random((chars, 2, 21, 21)) > 0.1


def omniglot_root(root: Path, chars: int = 3) -> Path:
    """A data root holding ``chars`` characters of each half as official-style npz files."""
    root.mkdir(parents=True, exist_ok=True)
    for half in ("background", "evaluation"):
        np.savez(root / f"images_{half}.npz", images=paper(chars))
    return root


def omni(root: Path, out: Path) -> list[str]:
    return [OMNI, "--set", f"task.root={root}", "--out", str(out), "--no-test"]


def unreadable(path: Path, monkeypatch) -> None:
    """Make ``path`` unreadable; as root (who reads anything) opening it is refused instead."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real = builtins.open

    def refuse(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)


# ------------------------------------------------------------------ 1. device, 2. memory
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_device_this_torch_lacks(tmp_path, cli, keep, device):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and device == "cuda":
        pytest.skip("this torch has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this torch has MPS")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "kept.txt").write_text("x")
    with keep(tmp_path):
        out = cli(
            "train", SINE, *TINY, "--set", f"train.device={device}", "--out", tmp_path / "run"
        )
    out.expect(2, "train.device", device, "not available")


def test_a_meta_batch_too_large_for_memory(tmp_path, cli, keep):
    (tmp_path / "kept.txt").write_text("x")
    with keep(tmp_path):
        out = cli(
            "train", SINE, *TINY, "--set", "train.meta_batch_size=1000000000000",
            "--out", tmp_path / "run", "--no-test",
        )  # fmt: skip
    out.expect(1, "out of memory", "lower train.meta_batch_size", "intact")


# ------------------------------------------------------------------------- 3. files
def test_an_unreadable_config_file(tmp_path, cli, keep, monkeypatch):
    config = tmp_path / "mine.toml"
    config.write_bytes(Path(SINE).read_bytes())
    unreadable(config, monkeypatch)
    with keep(tmp_path):
        out = cli("train", config, *TINY, "--out", tmp_path / "run")
    out.expect(2, "permission denied", str(config))


def test_an_unreadable_data_file(tmp_path, cli, keep, monkeypatch):
    root = omniglot_root(tmp_path / "data")
    unreadable(root / "images_background.npz", monkeypatch)
    with keep(root):
        out = cli("train", *omni(root, tmp_path / "run"))
    out.expect(2, "permission denied", "images_background.npz")


def test_download_root_under_a_file(tmp_path, cli, keep):
    (tmp_path / "file").write_text("not a folder")
    with keep(tmp_path):
        out = cli("data", "download", "omniglot", "--root", tmp_path / "file" / "omniglot")
    out.expect(2, "is a file", str(tmp_path / "file"))


def test_a_truncated_zip_is_named(tmp_path, cli, keep):
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "whole.zip", "w") as z:
        z.writestr("images_background/Arcadian/character01/0001_01.png", b"x" * 1000)
    for half in ("background", "evaluation"):
        (root / f"images_{half}.zip").write_bytes((root / "whole.zip").read_bytes()[:300])
    with keep(root):
        out = cli("train", *omni(root, tmp_path / "run"))
    out.expect(2, "images_background.zip", "download it again")


def test_a_truncated_npz_is_named(tmp_path, cli, keep):
    root = omniglot_root(tmp_path / "data")
    whole = (root / "images_evaluation.npz").read_bytes()
    (root / "images_evaluation.npz").write_bytes(whole[: len(whole) // 2])
    with keep(root):
        out = cli("train", *omni(root, tmp_path / "run"))
    out.expect(2, "images_evaluation.npz", "truncated", "again")


def test_a_truncated_cache_file_is_rebuilt(tmp_path):
    root = omniglot_root(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_omniglot(root, 7, sets=("background",), cache_dir=cache)
    (file,) = cache.iterdir()
    file.write_bytes(file.read_bytes()[:200])  # a copy cut short (full disk, killed copy)
    with pytest.warns(UserWarning, match="unreadable cache .*rebuilding"):
        again = load_omniglot(root, 7, sets=("background",), cache_dir=cache)
    np.testing.assert_array_equal(again.images, first.images)
    again = load_omniglot(root, 7, sets=("background",), cache_dir=cache)  # rebuilt: no warning
    np.testing.assert_array_equal(again.images, first.images)


def test_an_npz_missing_characters(tmp_path, cli, keep):
    root = omniglot_root(tmp_path / "data")
    with keep(root):
        out = cli("train", *omni(root, tmp_path / "run"))
    out.expect(2, "missing", "incomplete", "download")
    assert "load both halves" not in out.err


def test_a_folder_missing_characters(tmp_path, cli, keep):
    root = omniglot_root(tmp_path / "data")
    (root / "images_background.npz").unlink()
    folder = root / "images_background" / "Arcadian" / "character01"
    folder.mkdir(parents=True)
    for j, drawing in enumerate(paper(1)[0]):
        Image.fromarray(drawing).convert("1").save(folder / f"0001_{j + 1:02d}.png")
    with keep(root):
        out = cli("train", *omni(root, tmp_path / "run"))
    out.expect(2, "missing", "incomplete")


def test_a_half_not_loaded_says_load_both(tmp_path):
    root = omniglot_root(tmp_path / "data")
    data = load_omniglot(root, 7, sets=("background",), cache_dir=tmp_path / "cache")
    with pytest.raises(KeyError) as info:  # a KeyError still, for code that caught it
        data.select([1, 970])
    assert isinstance(info.value, UsageError) and "\n" not in str(info.value)
    assert "evaluation half is not loaded" in str(info.value)


@pytest.mark.parametrize("ink", [1, 255])
def test_an_integer_npz_with_ink_as_nonzero_loads_the_right_way_round(tmp_path, ink):
    drawings = paper(2)
    path = tmp_path / "images_background.npz"
    np.savez(path, images=np.where(drawings, 0, ink).astype(np.uint8))  # nonzero = ink
    with pytest.warns(UserWarning, match="are ink"):
        data = read_omniglot_npz(path, 7)
    np.testing.assert_array_equal(data.images, preprocess(drawings, 7))
    np.savez(path, images=drawings.astype(np.uint8))  # the official way: 1 = paper
    np.testing.assert_array_equal(read_omniglot_npz(path, 7).images, preprocess(drawings, 7))


def test_a_grey_npz_is_refused(tmp_path, cli, keep):
    root = omniglot_root(tmp_path / "data")
    grey = np.random.default_rng(0).integers(0, 256, (3, 2, 21, 21), dtype=np.uint8)
    np.savez(root / "images_background.npz", images=grey)
    with keep(root):
        out = cli("train", *omni(root, tmp_path / "run"))
    out.expect(2, "images_background.npz", "must be binary")


# ------------------------------------------------------------------- 4. configs by name
def test_list_outside_the_repository(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cli("list")
    assert out.code == 0 and not out.err
    assert "sinusoid/maml_10shot" in out.out and "omniglot/maml_5w1s" in out.out


@pytest.mark.parametrize("name", ["maml_10shot", "sinusoid/maml_10shot"])
def test_train_a_config_by_name_from_anywhere(tmp_path, cli, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    out = cli("train", name, *TINY, "--set", "train.iterations=1", "--no-test", "--out", "r")
    assert out.code == 0, out.err
    assert (tmp_path / "r" / "config.toml").is_file()


def test_test_a_config_by_name(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cli("test", "mean_10shot", "--set", "eval.tasks=4", "--out", "r")
    assert out.code == 0, out.err
    assert json.loads((tmp_path / "r" / "results.json").read_text())["tasks"] == 4


@pytest.mark.parametrize("command", ["train", "test"])
def test_a_mistyped_config_name(tmp_path, cli, keep, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept.txt").write_text("x")
    with keep(tmp_path):
        out = cli(command, "maml_10shoot")
    out.expect(2, "maml_10shoot", "did you mean", "maml_10shot")


def test_several_config_problems_are_one_line(tmp_path, cli, keep):
    (tmp_path / "kept.txt").write_text("x")
    with keep(tmp_path):
        out = cli(
            "train", SINE, "--set", "train.iterations=0", "--set", "train.meta_batch_size=0",
            "--out", tmp_path / "run",
        )  # fmt: skip
    out.expect(2, "train.iterations", "train.meta_batch_size")


# -------------------------------------------------------------- 5. the new user's complaints
def test_test_help_prints_95_percent(capsys):
    with pytest.raises(SystemExit):
        main(["test", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "95% interval" in text and "95%%" not in text


def test_readme_shows_the_keyword_only_arguments():
    readme = (ROOT / "README.md").read_text()
    assert "`metagrad.MAML(model, loss, *, inner_lr," in readme
    assert "MAML(model, loss, inner_lr" not in readme


def test_the_meta_test_shows_progress_on_a_terminal(tmp_path, cli, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    out = cli(
        "test", SINE, "--set", "eval.tasks=4", "--set", "eval.chunk_size=2", "--out", tmp_path
    )
    assert out.code == 0, out.err
    assert "meta-test" in out.err and "/4 [" in out.err


def test_the_meta_test_is_quiet_without_a_terminal(tmp_path, cli):
    out = cli("test", SINE, "--set", "eval.tasks=4", "--out", tmp_path)
    assert out.code == 0 and out.err == ""


@pytest.mark.parametrize("accuracy", [False, True])
def test_learning_curve_has_no_blank_half_and_a_readable_title(tmp_path, accuracy):
    pytest.importorskip("matplotlib")
    from metagrad.cli.plots import learning_curve

    run = tmp_path / "sinusoid-maml-10shot"
    run.mkdir()
    (run / "config.toml").write_bytes(Path(SINE).read_bytes())
    rows = [
        {
            "step": s,
            "split": split,
            "loss": 3.0 / s,
            **({"accuracy": 1 - 1 / s} if accuracy else {}),
        }
        for s in range(1, 200, 10)
        for split in ("train", "val")
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Image.open(learning_curve(run)) as image:
        width, height = image.size
    assert width < 1.6 * height if not accuracy else width > 2 * height  # one panel, or two
    from metagrad.config import load_config
    from metagrad.train.curves import run_title

    assert run_title(load_config(run / "config.toml")) == "MAML, sinusoid, trained on 10 shots"


@pytest.mark.parametrize(
    "setting, words",
    [("task.amplitude=[1.0, inf]", "finite"), ("algorithm.inner_lr=nan", "finite number > 0")],
)
def test_an_infinite_config_value(tmp_path, cli, keep, setting, words):
    (tmp_path / "kept.txt").write_text("x")
    with keep(tmp_path):
        out = cli("train", SINE, *TINY, "--set", setting, "--out", tmp_path / "run")
    out.expect(2, setting.partition("=")[0], words)


def test_every_activation_the_schema_offers_builds(tmp_path, cli):
    # found by test_fuzz.py: "silu" passed validation and crashed building the model
    out = cli(
        "train", SINE, *TINY, "--set", "model.activation=silu", "--no-test", "--out", tmp_path
    )
    assert out.code == 0, out.err
