"""Catalogue: `metagrad adapt`'s bad inputs (issue 16). Each case is one clear line on standard
error, exit 2, nothing written and every file there before byte-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import metagrad
from adapt_fixtures import FOLDER, RGB_RUN, SINE, untrained_run
from metagrad.errors import UsageError
from metagrad.train.pretrained import PRETRAINED, PretrainedInit
from reliability.test_api import raises
from reliability.test_inputs import unreadable


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("catalogue") / "run")


def drawing(path, seed: int = 0, mode: str = "1"):
    path.parent.mkdir(parents=True, exist_ok=True)
    paper = np.random.default_rng(seed).random((105, 105)) > 0.1
    Image.fromarray(paper).convert(mode).save(path)
    return path


def support(root, classes=("a", "b"), per_class: int = 1):
    for i, name in enumerate(classes):
        for k in range(per_class):
            drawing(root / "support" / name / f"{k}.png", seed=10 * i + k)
    return root / "support"


def query(root):
    return drawing(root / "query" / "q.png", seed=99)


def adapt(cli, keep, root, *argv):
    """`metagrad adapt` with ``argv``, asserting that nothing below ``root`` changed."""
    with keep(root):
        return cli("adapt", *argv)


def test_an_empty_class_folder(tmp_path, run, cli, keep):
    s = support(tmp_path)
    (s / "c").mkdir()
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", query(tmp_path))
    out.expect(2, f"class folder {s / 'c'} has no images", "add one or more")


def test_one_class_only(tmp_path, run, cli, keep):
    s = support(tmp_path, classes=("only",), per_class=2)
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", query(tmp_path))
    out.expect(2, "has one class (only)", "two or more classes")


def test_a_support_image_that_is_not_an_image(tmp_path, run, cli, keep):
    s = support(tmp_path)
    (s / "a" / "broken.png").write_bytes(b"not a png at all")
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", query(tmp_path))
    out.expect(2, "broken.png is not a readable image", "replace it")


def test_a_file_of_another_kind_in_a_class_folder(tmp_path, run, cli, keep):
    s = support(tmp_path)
    (s / "b" / "notes.txt").write_text("my classes")
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", query(tmp_path))
    out.expect(2, "notes.txt is not a .png/.jpg/.jpeg image")


def test_an_unreadable_query_image(tmp_path, run, cli, keep, monkeypatch):
    s, q = support(tmp_path), query(tmp_path)
    unreadable(q, monkeypatch)
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", q)
    out.expect(2, f"cannot read {q}", "permission denied")


def test_a_query_file_that_is_not_an_image(tmp_path, run, cli, keep):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    out = adapt(cli, keep, tmp_path, run, "--support", support(tmp_path), "--query", notes)
    out.expect(2, f"query file {notes} is not a .png/.jpg/.jpeg image")


def test_mixed_channel_counts(tmp_path, run):
    # Image files of any mode become the model's channels (grey photos for a colour model,
    # as the folder family trains on them); tensors are taken as they are, so theirs must agree.
    learner = metagrad.load(run)
    grey, colour = torch.rand(1, 28, 28), torch.rand(3, 28, 28)
    with raises(UsageError, "example 1 has shape (3, 28, 28) but example 0 has (1, 28, 28)"):
        learner.adapt([grey, colour], ["a", "b"])
    with raises(UsageError, "the model takes (1, 28, 28)"):
        learner.adapt(torch.stack([colour, colour]), ["a", "b"])
    rgb = untrained_run(tmp_path / "rgb", FOLDER, RGB_RUN)
    s = support(tmp_path / "data")
    drawing(s / "a" / "colour.png", seed=5, mode="RGB")
    images = [p for c in sorted(s.iterdir()) for p in sorted(c.iterdir())]
    adapted = metagrad.load(rgb).adapt(images, ["a", "a", "b"])
    assert adapted.support_x.shape == (3, 3, 28, 28)


def test_a_support_folder_with_nested_sub_folders(tmp_path, run, cli, keep):
    s = support(tmp_path)
    drawing(s / "a" / "more" / "x.png")
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", query(tmp_path))
    out.expect(2, f"class folder {s / 'a'} holds the sub-folder more", "one level deep")


def test_images_next_to_the_class_folders(tmp_path, run, cli, keep):
    s = support(tmp_path)
    drawing(s / "loose.png")
    out = adapt(cli, keep, tmp_path, run, "--support", s, "--query", query(tmp_path))
    out.expect(2, "holds the file loose.png next to its class folders")


def test_a_query_path_that_does_not_exist(tmp_path, run, cli, keep):
    missing = tmp_path / "query" / "nope.png"
    out = adapt(cli, keep, tmp_path, run, "--support", support(tmp_path), "--query", missing)
    out.expect(2, f"query path {missing} does not exist")


def test_a_support_folder_that_does_not_exist(tmp_path, run, cli, keep):
    missing = tmp_path / "nothing"
    out = adapt(cli, keep, tmp_path, run, "--support", missing, "--query", query(tmp_path))
    out.expect(2, f"support folder {missing} does not exist")


def test_a_model_name_that_does_not_exist(tmp_path, run, cli, keep, monkeypatch):
    entry = PretrainedInit("omniglot-maml-20w", "x", "Omniglot", 20, "-")
    monkeypatch.setitem(PRETRAINED._entries, entry.name, entry)
    args = ("--support", support(tmp_path), "--query", query(tmp_path))
    out = adapt(cli, keep, tmp_path, "omniglot-maml-2w", *args)
    out.expect(2, "no file, folder or pretrained initialisation named omniglot-maml-2w")
    assert "did you mean 'omniglot-maml-20w'?" in out.err


def test_a_run_without_support_or_an_adapted_model_with_it(tmp_path, run, cli, keep):
    q = query(tmp_path)
    adapt(cli, keep, tmp_path, run, "--query", q).expect(2, "give --support DIR")
    s = support(tmp_path)
    file = tmp_path / "adapted.safetensors"
    assert cli("adapt", run, "--support", s, "--query", q, "--save-adapted", file).code == 0
    out = adapt(cli, keep, tmp_path, file, "--support", s, "--query", q)
    out.expect(2, "is already adapted (to a, b)", "drop --support")


def test_a_regression_model(tmp_path, cli, keep):
    sine = untrained_run(tmp_path / "sine", config=SINE, overrides=[])
    out = adapt(
        cli, keep, tmp_path, sine, "--support", support(tmp_path), "--query", query(tmp_path)
    )
    out.expect(2, "is a regression model")


def test_an_out_file_in_a_missing_folder_writes_nothing(tmp_path, run, cli, keep):
    target = tmp_path / "missing" / "p.csv"
    args = ("--support", support(tmp_path), "--query", query(tmp_path), "--out", target)
    out = adapt(cli, keep, tmp_path, run, *args)
    out.expect(2, f"cannot write the predictions to {target}", "does not exist")
    assert not target.parent.exists()


def test_a_run_directory_without_a_config(tmp_path, cli, keep):
    (tmp_path / "empty").mkdir()
    args = ("--support", support(tmp_path), "--query", query(tmp_path))
    out = adapt(cli, keep, tmp_path, tmp_path / "empty", *args)
    out.expect(2, "holds no config.toml", "not a metagrad run directory")
