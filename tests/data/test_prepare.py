"""Preparing a data set once into a memory-mapped cache (data/prepare.py)."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

from metagrad.data import load_prepared, prepare
from metagrad.data.prepare import LayoutError
from metagrad.errors import UsageError
from natural_fixtures import (
    write_cifar100,
    write_cub,
    write_mini_jpeg,
    write_mini_pkl,
    write_tiered,
)


def test_mini_pkl_is_cached_as_is_and_memory_mapped(tmp_path):
    write_mini_pkl(tmp_path / "root", per_class=1)
    lines = prepare("mini-imagenet", tmp_path / "root", tmp_path / "cache")
    assert len(lines) == 3 and "64 classes" in lines[0] and "84x84" in lines[0]
    s = load_prepared("mini-imagenet", tmp_path / "cache")
    assert isinstance(s["train"].images, np.memmap) and s["train"].images.shape == (64, 84, 84, 3)
    assert s["val"].class_names[0].startswith("n0") and s["test"].labels.tolist() == list(range(20))
    assert sorted(p.name for p in (tmp_path / "cache" / "mini-imagenet").iterdir()) == [
        "meta.json",
        *sorted(f"{s}_{k}.npy" for s in ("test", "train", "val") for k in ("images", "labels")),
    ]  # no temporary file is left


def test_jpegs_are_stored_at_96_short_side_centre_crop(tmp_path):
    write_mini_jpeg(tmp_path / "root", per_class=1, files=1)
    prepare("mini-imagenet", tmp_path / "root", tmp_path / "cache")
    s = load_prepared("mini-imagenet", tmp_path / "cache")
    assert s["train"].images.shape == (64, 96, 96, 3)


def test_cifar_stays_32(tmp_path):
    write_cifar100(tmp_path / "root", per_class=1)
    prepare("fc100", tmp_path / "root", tmp_path / "cache")
    s = load_prepared("fc100", tmp_path / "cache")
    assert s["train"].images.shape == (120, 32, 32, 3) and len(s["test"].class_names) == 20


def test_default_cache_is_the_user_cache_never_the_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_tiered(root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = sorted(p.name for p in root.iterdir())
    os.chmod(root, 0o555)  # a read-only data disk
    try:
        prepare("tiered-imagenet", root)
    finally:
        os.chmod(root, 0o755)
    assert sorted(p.name for p in root.iterdir()) == before
    test = load_prepared("tiered-imagenet")["test"]
    assert test.images.shape == (160, 84, 84, 3) and len(set(test.groups)) == 8


def test_bad_layout_lists_every_problem_and_writes_nothing(tmp_path):
    images = write_cub(tmp_path / "root")
    (images / "005.Bird_5" / "Bird_5_0000_5.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (images / "009.Bird_9" / "Bird_9_0000_9.jpg").write_bytes(b"")
    empty = images / "002.Bird_2"
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(LayoutError) as e:
        prepare("cub", tmp_path / "root", tmp_path / "cache")
    problems = e.value.problems
    assert len(problems) == 3, problems
    assert "val: class 002.Bird_2 has no images" in problems
    assert any("Bird_5_0000_5.jpg: not a decodable image" in p for p in problems)
    assert "\n" not in str(e.value) and "3 problem(s)" in str(e.value)
    folder = tmp_path / "cache" / "cub"
    assert not (folder / "meta.json").exists() and not list(folder.glob("*.npy*"))
    with pytest.raises(UsageError, match="not prepared"):
        load_prepared("cub", tmp_path / "cache")


def test_class_counts_are_checked(tmp_path):
    write_mini_pkl(tmp_path, classes=(5, 16, 20), per_class=1)
    with pytest.raises(LayoutError) as e:
        prepare("mini-imagenet", tmp_path, tmp_path / "cache")
    assert e.value.problems == ["train: 5 classes, mini-imagenet has 64"]


def test_unwritable_cache_is_one_line(tmp_path):
    write_cifar100(tmp_path / "root", per_class=1)
    (tmp_path / "file").write_text("a file where the cache folder should go")  # fails as root too
    with pytest.raises(UsageError) as e:
        prepare("cifar-fs", tmp_path / "root", tmp_path / "file")
    assert "\n" not in str(e.value)
    assert "cannot write the cache" in str(e.value) and "--cache DIR" in str(e.value)


def test_prepare_speed(tmp_path):
    """Images/s of preparing from the pickled caches at a realistic size (2,000 84x84 images;
    the numbers quoted in data/prepare.py come from this test)."""
    write_mini_pkl(tmp_path / "mini", per_class=20)  # 100 classes x 20 = 2,000
    write_tiered(tmp_path / "tiered", classes=(351, 97, 160), per_class=3)  # 1,824 PNGs
    rates = {}
    for name, root, n in (("mini-imagenet", "mini", 2000), ("tiered-imagenet", "tiered", 1824)):
        start = time.perf_counter()
        prepare(name, tmp_path / root, tmp_path / "cache")
        rates[name] = n / (time.perf_counter() - start)
    print(f"prepare images/s: {rates}")
    assert rates["mini-imagenet"] > 2000 and rates["tiered-imagenet"] > 500


def test_a_failed_preparation_keeps_the_previous_cache(tmp_path):
    write_tiered(tmp_path / "root", classes=(351, 97, 160))
    prepare("tiered-imagenet", tmp_path / "root", tmp_path / "cache")
    # A damaged PNG in the second copy: listed by split and class, and the first cache survives.
    with (tmp_path / "root" / "val_images_png.pkl").open("rb") as f:
        pngs = pickle.load(f)
    pngs[3] = pngs[3][:20]
    with (tmp_path / "root" / "val_images_png.pkl").open("wb") as f:
        pickle.dump(pngs, f)
    with pytest.raises(LayoutError) as e:
        prepare("tiered-imagenet", tmp_path / "root", tmp_path / "cache")
    assert e.value.problems[0].startswith("val: image 3 of class n03000003_val: not a decodable")
    assert load_prepared("tiered-imagenet", tmp_path / "cache")["val"].images.shape[0] == 97
    assert sorted(p.name for p in (tmp_path / "cache" / "tiered-imagenet").iterdir())[0] == (
        "meta.json"
    )  # no temporary file left beside it


def test_images_per_class_are_checked_where_the_release_is_uniform(tmp_path):
    write_mini_jpeg(tmp_path, per_class=2, files=2)
    rows = (tmp_path / "val.csv").read_text().splitlines()
    (tmp_path / "val.csv").write_text("\n".join(rows[:-1]) + "\n")  # drop one image
    with pytest.raises(LayoutError) as e:
        prepare("mini-imagenet", tmp_path, tmp_path / "cache")
    assert e.value.problems == ["val: class n01000080 has 1 images, the others 2"]


def test_tiered_categories_are_checked(tmp_path):
    write_tiered(tmp_path, classes=(351, 97, 160))
    with (tmp_path / "test_labels.pkl").open("rb") as f:
        labels = pickle.load(f)
    labels["label_general"] = labels["label_general"] % 7  # one category lost
    with (tmp_path / "test_labels.pkl").open("wb") as f:
        pickle.dump(labels, f)
    with pytest.raises(LayoutError) as e:
        prepare("tiered-imagenet", tmp_path, tmp_path / "cache")
    assert e.value.problems == ["test: 7 categories, tiered-imagenet has 8"]
