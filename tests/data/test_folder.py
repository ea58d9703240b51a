"""A user's folder of class folders (data/folder.py): layouts, splits, the cache, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from metagrad.data.folder import class_folders, prepare_folder, read_folder
from metagrad.errors import UsageError
from natural_fixtures import write_folder


def test_a_seeded_class_split_is_disjoint_and_covers_every_class(tmp_path):
    write_folder(tmp_path / "d", classes=10)
    splits = read_folder(tmp_path / "d", (0.2, 0.2), seed=3)
    names = [set(s.class_names) for s in splits.values()]
    assert [len(n) for n in names] == [6, 2, 2]
    assert set.union(*names) == {f"class_{c:02d}" for c in range(10)}
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert read_folder(tmp_path / "d", (0.2, 0.2), seed=3)["val"].class_names == sorted(names[1])
    assert read_folder(tmp_path / "d", (0.2, 0.2), seed=4)["val"].class_names != sorted(names[1])


def test_given_split_folders_are_used_as_they_are(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        write_folder(tmp_path / "d" / split, classes=n)
    splits = read_folder(tmp_path / "d")
    assert [len(s.class_names) for s in splits.values()] == [4, 2, 3]


def test_any_size_and_mode_is_prepared_to_rgb_squares_and_cached_until_a_file_changes(tmp_path):
    write_folder(tmp_path / "d", classes=5)
    said = []
    splits = prepare_folder(tmp_path / "d", 24, tmp_path / "cache", log=said.append)
    assert (
        splits["train"].images.shape == (9, 24, 24, 3) and splits["train"].images.dtype == np.uint8
    )
    assert said and "preparing" in said[0]
    said.clear()
    prepare_folder(tmp_path / "d", 24, tmp_path / "cache", log=said.append)
    assert said == []  # unchanged: read from the cache
    Image.new("RGB", (9, 9)).save(tmp_path / "d" / "class_00" / "new.png")
    prepare_folder(tmp_path / "d", 24, tmp_path / "cache", log=said.append)
    assert said and "preparing" in said[0]  # a new image: prepared again


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (
                (d / "class_01" / "img_0.jpg").unlink()
                or [p.unlink() for p in (d / "class_01").iterdir()]
            ),
            "class folder {d}/class_01 has no images (.png, .jpg, .jpeg); add some or remove",
        ),
        (
            lambda d: (d / "class_02" / "notes.txt").write_text("hi"),
            "{d}/class_02/notes.txt is not an image file (expected .png, .jpg or .jpeg); move it",
        ),
        (
            lambda d: (d / "class_02" / "more").mkdir(),
            "{d}/class_02/more is a folder inside the class folder {d}/class_02",
        ),
        (
            lambda d: (d / "stray.png").write_bytes(b""),
            "{d}/stray.png is a file directly in {d}, which must hold one folder per class",
        ),
        (lambda d: (d / "train").mkdir(), "has train/ but no val/, test/; give all three"),
    ],
    ids=["empty class", "non-image file", "nested folder", "stray file", "partial splits"],
)
def test_bad_layouts_are_one_line_naming_the_fix(tmp_path, damage, message):
    d = write_folder(tmp_path / "d", classes=5)
    damage(d)
    with pytest.raises(UsageError) as e:
        read_folder(d)
    assert message.format(d=d) in str(e.value) and "\n" not in str(e.value)


def test_too_few_classes_and_undecodable_images(tmp_path):
    d = write_folder(tmp_path / "d", classes=2)
    with pytest.raises(UsageError, match="has 2 class\\(es\\); splitting them .* needs at least 3"):
        read_folder(d)
    d = write_folder(tmp_path / "e", classes=4)
    (d / "class_03" / "img_0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match="class_03/img_0.jpg: not a decodable image"):
        prepare_folder(d, 24, tmp_path / "cache")
    with pytest.raises(UsageError, match="is not a folder"):
        class_folders(tmp_path / "nowhere")


def test_the_folder_cache_reads_photos_as_adapt_does(tmp_path):
    """EXIF orientation and transparency are read alike for training (the cache) and for
    prediction (tasks/preprocess.py): one function, metagrad.imaging.upright."""
    from metagrad.tasks.preprocess import Preprocessing

    d = write_folder(tmp_path / "d", classes=5)
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(wide).save(d / "class_00" / "photo.jpg", exif=exif, quality=100)
    rgba = np.zeros((30, 30, 4), np.uint8)  # fully transparent: white paper
    Image.fromarray(rgba, "RGBA").save(d / "class_00" / "drawing.png")
    splits = prepare_folder(d, 24, tmp_path / "cache")
    split = next(s for s in splits.values() if "class_00" in s.class_names)
    c = split.class_names.index("class_00")
    cached = split.images[np.flatnonzero(split.labels == c)]  # sorted: drawing, img_*, photo
    expected = Preprocessing(24, 3, resize=24, resample="bilinear")
    for name, image in (("drawing.png", cached[0]), ("photo.jpg", cached[-1])):
        with Image.open(d / "class_00" / name) as img:
            assert np.abs(expected.pixels(img).astype(int) - image.astype(int)).max() <= 1, name
    assert cached[0].min() == 255  # transparency is paper
    assert cached[-1][:4].mean() > 200 and cached[-1][-4:].mean() < 50  # turned upright
