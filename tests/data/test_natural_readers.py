"""The natural-image readers on fixtures in exactly the real formats (natural_fixtures.py)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from metagrad.data import (
    read_cifar_fs,
    read_cub,
    read_fc100,
    read_mini_imagenet,
    read_tiered_imagenet,
)
from metagrad.data.cifar import CIFAR_FS_SPLIT, FC100_SPLIT
from metagrad.data.natural import decode, square
from metagrad.errors import UsageError
from natural_fixtures import (
    CIFAR100,
    write_cifar100,
    write_cub,
    write_mini_jpeg,
    write_mini_pkl,
    write_tiered,
)


def _disjoint(splits):
    names = [set(s.class_names) for s in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"


# --- CUB ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    write_cub(root)
    return root


def test_cub_split_by_class_index(cub_root):
    s = read_cub(cub_root)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [100, 50, 50]
    _disjoint(s)
    assert s["train"].class_names[:3] == ["001.Bird_1", "003.Bird_3", "005.Bird_5"]
    assert s["val"].class_names[:2] == ["002.Bird_2", "006.Bird_6"]  # i % 4 == 1, 0-based
    assert s["test"].class_names[:2] == ["004.Bird_4", "008.Bird_8"]
    assert len(s["train"]) == 100 and s["train"].labels.tolist() == list(range(100))
    assert decode(s["val"].images[0]).shape == (14, 20, 3)
    # the root may be CUB_200_2011 itself or its images folder
    assert read_cub(cub_root / "CUB_200_2011")["test"].class_names == s["test"].class_names


def test_cub_missing_class_folder(tmp_path, cub_root):
    root = tmp_path / "c"
    shutil.copytree(cub_root, root)
    shutil.rmtree(root / "CUB_200_2011/images/017.Bird_17")
    with pytest.raises(UsageError) as e:
        read_cub(root)
    _one_line(e, "missing", "017", "199 found", "extract")


def test_cub_wrong_root_names_the_other_format(tmp_path):
    write_mini_pkl(tmp_path, classes=(1, 1, 1), per_class=1)
    with pytest.raises(UsageError) as e:
        read_cub(tmp_path)
    _one_line(e, "no CUB", "CUB_200_2011/images", "mini-imagenet (pickled cache)")
    with pytest.raises(UsageError) as e:
        read_cub(tmp_path / "absent")
    _one_line(e, "not a directory")


def test_corrupt_jpeg_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match="not a decodable image"):
        decode(bad)


def test_square_resizes_short_side_then_crops_centre():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 90:110] = 255  # a bright centre stripe
    out = square(img, 50)
    assert out.shape == (50, 50, 3)
    assert out[:, 25].min() > 200 and out[:, 0].max() == 0
    same = np.ones((84, 84, 3), np.uint8)
    assert square(same, 84) is same


# --- mini-ImageNet -----------------------------------------------------------------------


def test_mini_jpeg_csv_index_is_one_based_over_numeric_order(tmp_path):
    write_mini_jpeg(tmp_path, classes=(2, 1, 1), per_class=0, files=12)
    wnid = "n01000001"
    # Row 10 must be <wnid>_10.JPEG: sorted as text it would be _2 (…_1, _10, _11, _12, _2).
    (tmp_path / "train.csv").write_text(
        f"filename,label\n{wnid}00000010.jpg,{wnid}\n{wnid}00000001.jpg,{wnid}\n"
        f"n0100000200000002.jpg,n01000002\n"
    )
    s = read_mini_imagenet(tmp_path)["train"]
    assert [p.name for p in s.images] == [f"{wnid}_10.JPEG", f"{wnid}_1.JPEG", "n01000002_2.JPEG"]
    assert decode(s.images[0])[0, 0, 0] == pytest.approx(200, abs=3)  # image 10 holds 10*20
    assert s.class_names == [wnid, "n01000002"] and s.labels.tolist() == [0, 0, 1]


def test_mini_jpeg_splits(tmp_path):
    wnids = write_mini_jpeg(tmp_path, per_class=2, files=3)
    s = read_mini_imagenet(tmp_path)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [64, 16, 20]
    assert s["val"].class_names == sorted(wnids["val"]) and len(s["test"]) == 40
    _disjoint(s)


def test_mini_csv_naming_a_missing_image(tmp_path):
    write_mini_jpeg(tmp_path, classes=(1, 1, 1), per_class=1, files=3)
    with (tmp_path / "val.csv").open("a") as f:
        f.write("n0100000200000009.jpg,n01000002\n")
    with pytest.raises(UsageError) as e:
        read_mini_imagenet(tmp_path)
    _one_line(e, "val.csv line 3", "image 9", "n01000002", "has 3")
    (tmp_path / "val.csv").write_text("filename,label\nn0100000200000001.jpg,n01000002\n")
    shutil.rmtree(tmp_path / "images" / "n01000003")
    with pytest.raises(UsageError) as e:
        read_mini_imagenet(tmp_path)
    _one_line(e, "test.csv line 2", "images/n01000003 is missing")


def test_mini_images_without_csvs(tmp_path):
    write_mini_jpeg(tmp_path, classes=(1, 1, 1), per_class=1, files=1)
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").unlink()
    with pytest.raises(UsageError) as e:
        read_mini_imagenet(tmp_path)
    _one_line(e, "no train.csv", "Ravi", "beside images/")


def test_mini_pkl(tmp_path):
    write_mini_pkl(tmp_path, per_class=2)
    s = read_mini_imagenet(tmp_path)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [64, 16, 20]
    assert s["train"].images.shape == (128, 84, 84, 3) and s["train"].images.dtype == np.uint8
    assert np.bincount(s["test"].labels).tolist() == [2] * 20
    _disjoint(s)


def test_mini_wrong_root(tmp_path):
    write_cub(tmp_path, classes=2)
    with pytest.raises(UsageError) as e:
        read_mini_imagenet(tmp_path)
    _one_line(e, "no mini-ImageNet", "train.csv", "mini-imagenet-cache", "looks like cub")


# --- tiered-ImageNet ---------------------------------------------------------------------


@pytest.mark.parametrize("bytes_keys", [False, True])
@pytest.mark.parametrize("unpacked", [False, True])
def test_tiered_both_layouts_and_key_kinds(tmp_path, bytes_keys, unpacked):
    write_tiered(tmp_path, classes=(3, 2, 2), per_class=2, bytes_keys=bytes_keys, unpacked=unpacked)
    s = read_tiered_imagenet(tmp_path)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [3, 2, 2]
    assert s["train"].class_names[0] == "n03000000_train"
    assert s["train"].labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert decode(s["val"].images[3]).shape == (84, 84, 3)
    _disjoint(s)


def test_tiered_full_class_counts(tmp_path):
    write_tiered(tmp_path)
    s = read_tiered_imagenet(tmp_path)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [351, 97, 160]
    assert [len(set(s[k].groups)) for k in ("train", "val", "test")] == [20, 6, 8]
    assert s["train"].groups[:2] == ["category_train_0", "category_train_1"]
    assert s["train"].groups[20] == "category_train_0"  # class 20 is in category 20 % 20


def test_tiered_labels_and_images_disagree(tmp_path):
    write_tiered(tmp_path, classes=(2, 1, 1))
    with (tmp_path / "val_images_png.pkl").open("wb") as f:
        pickle.dump([], f)
    with pytest.raises(UsageError) as e:
        read_tiered_imagenet(tmp_path)
    _one_line(e, "0 images for 1 labels")


def test_tiered_truncated_pickle(tmp_path):
    write_tiered(tmp_path, classes=(2, 1, 1))
    data = (tmp_path / "train_images_png.pkl").read_bytes()
    (tmp_path / "train_images_png.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError) as e:
        read_tiered_imagenet(tmp_path)
    _one_line(e, "train_images_png.pkl", "truncated")


# --- CIFAR-FS and FC100 ------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["str-keys", "bytes-keys"])
def cifar_root(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar100(root, per_class=2, bytes_keys=request.param)
    return root


def test_cifar_fs_split(cifar_root):
    s = read_cifar_fs(cifar_root)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [64, 16, 20]
    assert s["val"].class_names == CIFAR_FS_SPLIT["val"]
    assert s["test"].class_names == CIFAR_FS_SPLIT["test"]
    assert len(s["train"]) == 64 * 4 and s["train"].images.shape[1:] == (32, 32, 3)
    assert np.bincount(s["train"].labels).tolist() == [4] * 64  # train and test halves pooled
    _disjoint(s)


def test_fc100_split(cifar_root):
    s = read_fc100(cifar_root)
    assert [len(s[k].class_names) for k in ("train", "val", "test")] == [60, 20, 20]
    for split in ("val", "test"):
        want = {f for c in FC100_SPLIT[split] for f in CIFAR100[c].split()}
        assert set(s[split].class_names) == want
        assert set(s[split].groups) == set(FC100_SPLIT[split])
    assert len(set(s["train"].groups)) == 12
    assert s["test"].groups[s["test"].class_names.index("baby")] == "people"
    _disjoint(s)


def test_cifar_pixels_are_chw_row_major(tmp_path):
    folder = write_cifar100(tmp_path, per_class=1)
    with (folder / "train").open("rb") as f:
        batch = pickle.load(f)
    s = read_cifar_fs(tmp_path)
    first_train_class = s["train"].class_names[0]  # apple, fine label 0, image 0 of train
    assert first_train_class == "apple"
    want = batch["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(s["train"].images[0], want)


def test_cifar10_or_wrong_root(tmp_path):
    folder = write_cifar100(tmp_path, per_class=1)
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    with pytest.raises(UsageError) as e:
        read_cifar_fs(tmp_path)
    _one_line(e, "no fine classes", "cifar-100-python.tar.gz")
    with pytest.raises(UsageError) as e:
        read_fc100(tmp_path / "cifar-100-python" / "train")
    _one_line(e, "not a directory")
