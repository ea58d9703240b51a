"""Catalogue cases of ``metagrad data prepare NAME --root DIR [--cache DIR]``: each bad input is
one line on standard error naming the fix (exit 2); a bad layout also lists every problem on
standard output."""

from __future__ import annotations

import shutil

import pytest

from natural_fixtures import (
    write_cifar100,
    write_cub,
    write_mini_jpeg,
    write_mini_pkl,
    write_tiered,
)


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    """The default cache of a call without --cache: never the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    write_cub(root)
    return root


def test_prepare_cub(cli, cub_root, tmp_path):
    out = cli("data", "prepare", "cub", "--root", cub_root, "--cache", tmp_path)
    assert out.code == 0, out.err
    lines = out.out.splitlines()
    assert lines[0] == "train: decoding 100 images of 100 classes"
    lines = [line for line in lines if line.startswith("ok ")]
    assert lines[0].startswith("ok train: 100 classes, 100 images") and "96x96" in lines[0]
    assert (tmp_path / "cub" / "test_images.npy").is_file()


@pytest.mark.parametrize(
    "name, writer",
    [
        ("mini-imagenet", lambda r: write_mini_pkl(r, per_class=1)),
        ("mini-imagenet", lambda r: write_mini_jpeg(r, per_class=1, files=1)),
        ("tiered-imagenet", lambda r: write_tiered(r, bytes_keys=True)),
        ("cifar-fs", lambda r: write_cifar100(r, per_class=1)),
        ("fc100", lambda r: write_cifar100(r, per_class=1)),
    ],
)
def test_prepare_each_data_set(cli, tmp_path, name, writer):
    writer(tmp_path / "root")
    out = cli("data", "prepare", name, "--root", tmp_path / "root", "--cache", tmp_path / "c")
    assert out.code == 0, out.err
    assert len([line for line in out.out.splitlines() if line.startswith("ok ")]) == 3
    assert (tmp_path / "c" / name / "meta.json").is_file()


def test_bad_layout_lists_problems_exit_2(cli, cub_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(cub_root, root)
    images = root / "CUB_200_2011" / "images"
    (images / "005.Bird_5" / "Bird_5_0000_5.jpg").write_bytes(b"\xff\xd8 cut short")
    for f in (images / "002.Bird_2").iterdir():
        f.unlink()
    out = cli("data", "prepare", "cub", "--root", root, "--cache", tmp_path / "c")
    out.expect(2, "2 problem(s)", "cub", "002.Bird_2 has no images", "listed above")
    problems = [line for line in out.out.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 2 and all(p.startswith("problem: ") for p in problems)
    assert "Bird_5_0000_5.jpg: not a decodable image" in problems[1]


def test_missing_class_folder(cli, cub_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(cub_root, root)
    shutil.rmtree(root / "CUB_200_2011" / "images" / "200.Bird_200")
    cli("data", "prepare", "cub", "--root", root).expect(2, "missing", "200", "extract")


def test_wrong_root_and_other_format(cli, cub_root, tmp_path):
    cli("data", "prepare", "cub", "--root", tmp_path / "nope").expect(2, "not a directory")
    cli("data", "prepare", "tiered-imagenet", "--root", cub_root).expect(
        2, "no tiered-ImageNet", "looks like cub"
    )
    write_tiered(tmp_path / "t", classes=(1, 1, 1))
    cli("data", "prepare", "mini-imagenet", "--root", tmp_path / "t").expect(
        2, "no mini-ImageNet", "looks like tiered-imagenet"
    )


def test_csv_naming_a_missing_image(cli, tmp_path):
    write_mini_jpeg(tmp_path, per_class=1, files=1)
    with (tmp_path / "test.csv").open("a") as f:
        f.write("n0100010000000002.jpg,n01000100\n")
    cli("data", "prepare", "mini-imagenet", "--root", tmp_path).expect(
        2, "test.csv line 22", "image 2", "n01000100"
    )


def test_hostile_and_truncated_pickles(cli, tmp_path):
    write_mini_pkl(tmp_path, per_class=1)
    marker = tmp_path / "pwned"
    hostile = b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (tmp_path / "mini-imagenet-cache-validation.pkl").write_bytes(hostile)
    cli("data", "prepare", "mini-imagenet", "--root", tmp_path).expect(2, "refused", "posix.system")
    assert not marker.exists()
    data = (tmp_path / "mini-imagenet-cache-train.pkl").read_bytes()
    (tmp_path / "mini-imagenet-cache-train.pkl").write_bytes(data[:1000])
    cli("data", "prepare", "mini-imagenet", "--root", tmp_path).expect(2, "truncated", "train.pkl")


def test_unknown_name_is_argparse_usage(cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli("data", "prepare", "imagenet", "--root", tmp_path)
    assert e.value.code == 2 and "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_the_three_name_lists_agree():
    # The CLI's choices (no import of the runner when building the parser), the runner's
    # PREPARE registry and the data layer's NATURAL_SETS name the same data sets.
    from metagrad.cli.main import _parser
    from metagrad.data import NATURAL_SETS
    from metagrad.train.build import PREPARE

    data = next(
        a
        for a in _parser()._subparsers._group_actions[0].choices["data"]._actions
        if a.dest == "data_command"
    )
    prepare = next(a for a in data.choices["prepare"]._actions if a.dest == "dataset")
    assert list(prepare.choices) == list(PREPARE) == list(NATURAL_SETS)
