"""Tiny copies of the natural-image data sets, written in exactly their real formats.

None of the data sets can be downloaded here (NATURAL_IMAGES.md), so every reader is tested on
these: the real folder names, file names, pickle layouts and CSV conventions, with a few tiny
images per class.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# CIFAR-100's 20 superclasses and their fine classes (both name lists are alphabetical in the
# real `meta`, and the label indices follow that order).
CIFAR100 = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def rgb(seed: int, h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def write_cub(root: Path, classes: int = 200, per_class: int = 1) -> Path:
    """``CUB_200_2011/images/<NNN.Name>/*.jpg``; returns the images folder."""
    images = root / "CUB_200_2011" / "images"
    for c in range(1, classes + 1):
        folder = images / f"{c:03d}.Bird_{c}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rgb(c * 10 + k, 14, 20)).save(folder / f"Bird_{c}_{k:04d}_{c}.jpg")
    return images


def write_mini_jpeg(root: Path, classes=(64, 16, 20), per_class: int = 1, files: int = 12):
    """MMFewShot's ``images/<wnid>/<wnid>_<n>.JPEG`` + Ravi's CSVs; each class folder holds
    ``files`` JPEGs numbered 1..files (so sorting by text would put 10 before 2), the CSV names
    the first ``per_class`` of them. Returns ``{split: [wnid, ...]}``."""
    wnids: dict[str, list[str]] = {}
    n = 0
    for split, count in zip(("train", "val", "test"), classes, strict=True):
        rows = ["filename,label"]
        wnids[split] = []
        for _ in range(count):
            n += 1
            wnid = f"n{1000000 + n:08d}"
            wnids[split].append(wnid)
            folder = root / "images" / wnid
            folder.mkdir(parents=True)
            for k in range(1, files + 1):
                img = np.full((10, 16, 3), k * 20 % 256, dtype=np.uint8)  # k is in the pixels
                Image.fromarray(img).save(folder / f"{wnid}_{k}.JPEG", quality=100)
            rows += [f"{wnid}{k:08d}.jpg,{wnid}" for k in range(1, per_class + 1)]
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return wnids


def write_mini_pkl(root: Path, classes=(64, 16, 20), per_class: int = 2, protocol: int = 4):
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for split, count in zip(("train", "validation", "test"), classes, strict=True):
        images = np.stack([rgb(n + i, 84, 84) for i in range(count * per_class)])
        class_dict = {}
        for c in range(count):
            n += 1
            class_dict[f"n{2000000 + n:08d}"] = list(range(c * per_class, (c + 1) * per_class))
        with (root / f"mini-imagenet-cache-{split}.pkl").open("wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=protocol)


def write_tiered(
    root: Path, classes=(351, 97, 160), per_class: int = 1, *, bytes_keys=False, unpacked=False
) -> None:
    """Ren et al.'s pickles (or MMFewShot's unpacked ``.byte`` files); labels are per split,
    0-based, as in the release."""
    root.mkdir(parents=True, exist_ok=True)
    for split, count, cats in zip(("train", "val", "test"), classes, (20, 6, 8), strict=True):
        specific = np.repeat(np.arange(count), per_class)
        general = specific % cats  # the real release's 20 / 6 / 8 categories
        pngs = [
            np.frombuffer(encoded(rgb(i, 84, 84)), dtype=np.uint8) for i in range(len(specific))
        ]
        labels = {
            "label_specific": specific,
            "label_general": general,
            "label_specific_str": [f"n{3000000 + c:08d}_{split}" for c in range(count)],
            "label_general_str": [f"category_{split}_{g}" for g in range(cats)],
        }
        if bytes_keys:  # as some copies are: Python 2 str keys read back as bytes
            labels = {k.encode(): v for k, v in labels.items()}
            labels[b"label_specific_str"] = [s.encode() for s in labels[b"label_specific_str"]]
        with (root / f"{split}_labels.pkl").open("wb") as f:
            pickle.dump(labels, f, protocol=2)
        if unpacked:
            (root / split).mkdir(parents=True)
            for i, png in enumerate(pngs):
                (root / split / f"{split}_image_{i}.byte").write_bytes(png.tobytes())
        else:
            with (root / f"{split}_images_png.pkl").open("wb") as f:
                pickle.dump(pngs, f, protocol=2)


def write_cifar100(root: Path, per_class: int = 2, *, bytes_keys: bool = False) -> Path:
    """``cifar-100-python/{train,test,meta}``; ``per_class`` images of each fine class in each
    half. Returns the folder."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    coarse_names = sorted(CIFAR100)
    fine_names = sorted(f for v in CIFAR100.values() for f in v.split())
    parent = {f: coarse_names.index(c) for c, v in CIFAR100.items() for f in v.split()}
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    for half in ("train", "test"):
        fine = np.repeat(np.arange(100), per_class)
        data = np.stack([rgb(i, 32, 32).transpose(2, 0, 1).reshape(-1) for i in range(len(fine))])
        batch = {
            key("data"): data,
            key("fine_labels"): fine.tolist(),
            key("coarse_labels"): [parent[fine_names[f]] for f in fine],
            key("filenames"): [f"img_{i}.png" for i in range(len(fine))],
        }
        with (folder / half).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {key("fine_label_names"): fine_names, key("coarse_label_names"): coarse_names}
    with (folder / "meta").open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def write_folder(root: Path, classes: int = 6, per_class: int = 3) -> Path:
    """A user's folder data set: ``root/<class>/*`` of PNG and JPEG images in every size and
    mode a user's photos and scans come in (RGB, grey, 1-bit, RGBA, palette)."""
    modes = ["RGB", "L", "1", "RGBA", "P"]
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            img = Image.fromarray(rgb(100 * c + k, 40 + 7 * k, 30 + 5 * c))
            img = img.convert(modes[(c + k) % len(modes)])
            suffix = ".png" if img.mode in ("1", "RGBA", "P") or k % 2 else ".jpg"
            img.save(folder / f"img_{k}{suffix}")
    return root
