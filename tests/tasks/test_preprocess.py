"""The preprocessing record turns any image into exactly the input training made of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adapt_fixtures import DATA, ROOT, omniglot_drawings
from metagrad.config import load_config
from metagrad.data.drawings import preprocess as omniglot_cache_preprocess
from metagrad.data.natural import square
from metagrad.data.omniglot import read_omniglot_folder
from metagrad.errors import UsageError
from metagrad.tasks.augment import METAOPTNET, MMFEWSHOT
from metagrad.tasks.episodes import EpisodeIndices, gather_episodes
from metagrad.tasks.preprocess import (
    Preprocessing,
    natural,
    omniglot,
)
from metagrad.train.image_tasks import image_preprocessing

needs_omniglot = pytest.mark.skipif(
    not (DATA / "images_evaluation.npz").exists(), reason="no Omniglot data in ../shared/data"
)


def drawing(seed: int = 0, size: int = 105) -> np.ndarray:
    """A ``[size, size]`` bool drawing, True = paper, strokes as blocks of ink."""
    rng = np.random.default_rng(seed)
    paper = np.ones((size, size), bool)
    for _ in range(6):
        r, c = rng.integers(0, size - 12, 2)
        paper[r : r + rng.integers(3, 12), c : c + rng.integers(3, 12)] = False
    return paper


@needs_omniglot
def test_official_pngs_give_the_training_cache_bit_for_bit(tmp_path):
    # Files in the official layout, read by metagrad's Omniglot reader (what training caches)
    # and by the preprocessing record from the same PNGs.
    paper = omniglot_drawings(40, 3)
    for c in range(3):
        folder = tmp_path / "images_evaluation" / "Alphabet" / f"character{c + 1:02d}"
        folder.mkdir(parents=True)
        for d in range(20):
            Image.fromarray(paper[c, d]).save(folder / f"{1005 + c:04d}_{d + 1:02d}.png")
    cached = read_omniglot_folder(tmp_path / "images_evaluation").images  # [3, 20, 28, 28]
    record = omniglot(28)
    for c in range(3):
        for d in range(20):
            png = tmp_path / "images_evaluation" / "Alphabet" / f"character{c + 1:02d}"
            with Image.open(png / f"{1005 + c:04d}_{d + 1:02d}.png") as image:
                assert image.mode == "1" and image.size == (105, 105)
                np.testing.assert_array_equal(record.pixels(image), cached[c, d])
    # ... and the tensor is the episode sampler's: uint8 / 255 in float32, [1, 28, 28].
    indices = EpisodeIndices(np.array([[0]]), np.array([[[4]]]))
    episode = gather_episodes(cached, indices, shots=1)
    with Image.open(tmp_path / "images_evaluation/Alphabet/character01/1005_05.png") as image:
        assert torch.equal(record.tensor(image), episode.support_x[0, 0])


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA", "P", "LA", "I;16"])
def test_every_image_mode_of_a_drawing_gives_the_same_input(mode):
    paper = drawing()
    expected = omniglot_cache_preprocess(paper, 28)
    image = Image.fromarray(paper)
    converted = image.convert("I;16") if mode == "I;16" else image.convert(mode)
    if mode == "I;16":  # a 16-bit grey PNG: paper is 65535
        converted = Image.fromarray((paper * 65535).astype(np.uint16))
    np.testing.assert_array_equal(omniglot().pixels(converted), expected)


def test_transparency_is_paper():
    # Black strokes on a transparent background (a drawing app's export): paper where clear.
    paper = drawing(1)
    rgba = np.zeros((105, 105, 4), np.uint8)
    rgba[..., 3] = np.where(paper, 0, 255)  # ink opaque black, paper fully transparent
    got = omniglot().pixels(Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(got, omniglot_cache_preprocess(paper, 28))


def test_any_size_is_resized_whole_and_a_larger_scan_gives_the_same_drawing():
    paper = drawing(2)
    scan = Image.fromarray(paper).resize((210, 210), Image.Resampling.NEAREST)
    got = omniglot().pixels(scan)
    assert got.shape == (28, 28) and got.dtype == np.uint8
    # Nearest-neighbour doubling changes Lanczos' result by a little, never the drawing.
    ink = omniglot_cache_preprocess(paper, 28).astype(int)
    assert np.abs(got.astype(int) - ink).mean() < 4
    wide = omniglot().pixels(Image.fromarray(np.ones((50, 80), bool)))  # blank, stretched
    assert wide.shape == (28, 28) and wide.max() == 0


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :10] = 255  # a white bar on the left
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    image.save(tmp_path / "photo.jpg", exif=exif, quality=100)
    record = Preprocessing(60, 3)
    with Image.open(tmp_path / "photo.jpg") as photo:
        got = record.pixels(photo)
    assert got[:9, :, 0].mean() > 200 and got[12:, :, 0].mean() < 50  # the bar is on top


def test_natural_images_as_the_prepared_cache_then_the_test_transform():
    # A photo becomes what training made of it: `data prepare` stores it at 96 (short side,
    # centre square), then the test transform crops the centre 84 and normalises.
    rng = np.random.default_rng(0)
    for h, w in ((120, 100), (84, 84), (97, 300), (96, 96), (400, 97)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        stored = torch.from_numpy(square(rgb, 96)[None].copy())  # [1, 96, 96, 3] as cached
        record = natural()
        np.testing.assert_array_equal(
            record.pixels(Image.fromarray(rgb)), square(rgb, 96)[6:90, 6:90]
        )
        assert torch.equal(record.tensor(Image.fromarray(rgb)), MMFEWSHOT.test(stored)[0])
    # CIFAR-FS / FC100 are stored at their 32x32 input size: the record keeps a 32x32 image.
    cifar = image_preprocessing(
        load_config(ROOT / "configs" / "cifar-fs" / "maml_conv4-32_5w1s.toml").task
    )
    tiny = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = METAOPTNET.test(torch.from_numpy(tiny[None].copy()))[0]
    assert torch.equal(cifar.tensor(Image.fromarray(tiny)), expected)
    assert cifar.shape == (3, 32, 32) and cifar.mean == METAOPTNET.mean


def test_grey_photos_become_grey_rgb_for_a_colour_model():
    grey = Image.fromarray(np.full((90, 90), 77, np.uint8))
    got = natural(84, resize=None, mean=None, std=None).pixels(grey)
    assert got.shape == (84, 84, 3) and (got == 77).all()


def test_batch_stacks_and_refuses_nothing():
    record = omniglot()
    images = [Image.fromarray(drawing(i)) for i in range(3)]
    assert record.batch(images).shape == (3, 1, 28, 28)
    with pytest.raises(UsageError, match="no images"):
        record.batch([])


def test_the_record_round_trips_through_json():
    for record in (omniglot(28), natural(), Preprocessing(32, 3, invert=True, resample="box")):
        text = json.dumps(record.to_dict())
        assert Preprocessing.from_dict(json.loads(text)) == record


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"version": 9}, "version 9"),
        ({"format": "x"}, "not a metagrad preprocessing record"),
        ({"colour": True}, "unknown preprocessing key 'colour'"),
        ({"size": 0}, "size must be"),
        ({"channels": 2}, "channels must be 1"),
        ({"mean": [1.0, 2.0]}, "mean and std go together"),
        ({"resize": 10}, "resize must be a short side >= size"),
        ({"resample": "cubic"}, "resample must be one of"),
    ],
)
def test_a_bad_record_is_one_clear_line(change, words):
    record = {**omniglot(28).to_dict(), **change}
    with pytest.raises(UsageError, match=words) as caught:
        Preprocessing.from_dict(record, "run/preprocessing.json")
    assert str(caught.value).startswith("run/preprocessing.json: ")
    assert "\n" not in str(caught.value)
