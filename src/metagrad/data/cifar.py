"""CIFAR-FS (Bertinetto et al., 2019) and FC100 (Oreshkin et al., 2018) from CIFAR-100.

Both are class splits of CIFAR-100's python pickles (``cifar-100-python/{train,test,meta}``;
``data`` uint8 ``[N, 3072]``, each row the red, green then blue 32x32 planes row-major), with
the train and test halves pooled (600 images per class). CIFAR-FS splits the 100 fine classes
64/16/20 by name; FC100 splits the 20 superclasses 12/4/4 (60/20/20 fine classes). Images stay
32x32: the benchmarks' numbers are at that size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metagrad.data.natural import ImageSplit, not_found
from metagrad.data.safe_pickle import load_pickle
from metagrad.errors import UsageError

CIFAR_FS_SPLIT = {
    "val": [
        "beaver",
        "otter",
        "flatfish",
        "shark",
        "lamp",
        "television",
        "beetle",
        "butterfly",
        "sea",
        "camel",
        "cattle",
        "crab",
        "crocodile",
        "maple_tree",
        "motorcycle",
        "tractor",
    ],
    "test": [
        "whale",
        "poppy",
        "rose",
        "sweet_pepper",
        "telephone",
        "bed",
        "table",
        "wardrobe",
        "leopard",
        "plain",
        "chimpanzee",
        "fox",
        "snail",
        "worm",
        "baby",
        "man",
        "woman",
        "bicycle",
        "pickup_truck",
        "rocket",
    ],
}
FC100_SPLIT = {
    "val": [
        "large_carnivores",
        "large_omnivores_and_herbivores",
        "non-insect_invertebrates",
        "small_mammals",
    ],
    "test": ["aquatic_mammals", "insects", "medium_mammals", "people"],
}
_EXPECTED = "cifar-100-python/{train,test,meta} (CIFAR-100, python version)"


def _keys(d: object, path: Path) -> dict:
    """A Python 2 pickle's dict with ``str`` keys (copies differ: some have bytes keys)."""
    if not isinstance(d, dict):
        raise UsageError(f"{path}: holds a {type(d).__name__}, not CIFAR-100's dict; {_EXPECTED}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values: list) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_cifar100(root: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All 60,000 CIFAR-100 images ``[N, 32, 32, 3]``, fine and coarse labels, and ``meta``."""
    root = Path(root).expanduser()
    folder = next((c for c in (root / "cifar-100-python", root) if (c / "meta").is_file()), None)
    if folder is None:
        raise not_found(root, "CIFAR-100", _EXPECTED)
    meta = _keys(load_pickle(folder / "meta", encoding="latin1"), folder / "meta")
    images, fine, coarse = [], [], []
    for half in ("train", "test"):
        d = _keys(load_pickle(folder / half, encoding="latin1"), folder / half)
        try:
            data = np.asarray(d["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            fine.append(np.asarray(d["fine_labels"], dtype=np.int64))
            coarse.append(np.asarray(d["coarse_labels"], dtype=np.int64))
        except (KeyError, ValueError) as e:
            raise UsageError(
                f"{folder / half}: not a CIFAR-100 batch ({type(e).__name__}: {e}); expected "
                "'data' uint8 [N, 3072], 'fine_labels', 'coarse_labels'"
            ) from None
        if not len(images[-1]) == len(fine[-1]) == len(coarse[-1]):
            raise UsageError(f"{folder / half}: data and labels differ in length; damaged copy")
    return np.concatenate(images), np.concatenate(fine), np.concatenate(coarse), meta


def _split(
    images, fine, names: list[str], members: dict[str, list[str]], parent: dict | None = None
) -> dict:
    """Three :class:`ImageSplit` of the fine classes in ``members`` (train: all the others)."""
    out = {}
    for split in ("train", "val", "test"):
        if split == "train":
            held = {c for s in ("val", "test") for c in members[s]}
            classes = [i for i, n in enumerate(names) if n not in held]
        else:
            classes = [names.index(n) for n in members[split]]
        keep = np.isin(fine, classes)
        remap = np.full(len(names), -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        groups = [parent[i] for i in classes] if parent is not None else None
        out[split] = ImageSplit(
            images[keep], remap[fine[keep]], [names[i] for i in classes], groups
        )
    return out


def _check_names(wanted: dict[str, list[str]], have: list[str], what: str, root: Path) -> None:
    absent = [n for s in wanted.values() for n in s if n not in have]
    if absent:
        raise UsageError(
            f"{root}: CIFAR-100's meta has no {what} {', '.join(absent[:4])}; this is not "
            "CIFAR-100 (CIFAR-10 has no such names): use cifar-100-python.tar.gz"
        )


def read_cifar_fs(root: Path | str) -> dict[str, ImageSplit]:
    """CIFAR-FS: 64/16/20 fine classes, 32x32, at most 600 images each."""
    images, fine, _, meta = read_cifar100(root)
    names = _names(meta.get("fine_label_names", []))
    _check_names(CIFAR_FS_SPLIT, names, "fine classes", Path(root))
    return _split(images, fine, names, CIFAR_FS_SPLIT)


def read_fc100(root: Path | str) -> dict[str, ImageSplit]:
    """FC100: 12/4/4 superclasses, i.e. 60/20/20 fine classes, 32x32."""
    images, fine, coarse, meta = read_cifar100(root)
    names = _names(meta.get("fine_label_names", []))
    supers = _names(meta.get("coarse_label_names", []))
    _check_names(FC100_SPLIT, supers, "superclasses", Path(root))
    # A fine class's superclass, read off the images (the meta file does not record it).
    parent = {int(f): supers[int(c)] for f, c in zip(fine, coarse, strict=True)}
    members = {
        s: [names[f] for f in sorted(parent) if parent[f] in FC100_SPLIT[s]] for s in FC100_SPLIT
    }
    return _split(images, fine, names, members, parent)
