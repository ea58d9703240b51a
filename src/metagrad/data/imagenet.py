"""mini-ImageNet (Vinyals et al., 2016; Ravi & Larochelle's split) and tiered-ImageNet
(Ren et al., 2018), each in the forms users have.

mini-ImageNet:
  - MMFewShot's ``images/<wnid>/<wnid>_<n>.JPEG`` (full-size ILSVRC images) with Ravi's
    ``train.csv``/``val.csv``/``test.csv``: a header, then rows ``n0153282900000005.jpg,n01532829``
    whose digits after the wnid are a **1-based** index into that class's files sorted by the
    number after the last ``_`` (so ``..._10.JPEG`` comes after ``..._9.JPEG``).
  - ``mini-imagenet-cache-{train,validation,test}.pkl``: a dict with ``image_data`` uint8
    ``[N, 84, 84, 3]`` and ``class_dict`` ``{wnid: [indices]}``.
tiered-ImageNet: ``{split}_labels.pkl`` (``label_specific`` ints, ``label_specific_str``
names; str or bytes keys) with the images in ``{split}_images_png.pkl`` (a list of uint8 arrays,
each one PNG file's bytes) or unpacked as ``{split}/{split}_image_<i>.byte`` (MMFewShot).
Every pickle goes through :func:`~metagrad.data.safe_pickle.load_pickle`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from metagrad.data.natural import ImageSplit, labels_from, not_found
from metagrad.data.safe_pickle import load_pickle
from metagrad.errors import UsageError

_MINI_JPEG = "images/<wnid>/<wnid>_<n>.JPEG with train.csv, val.csv, test.csv"
_MINI_PKL = "mini-imagenet-cache-{train,validation,test}.pkl"
_TIERED = "{train,val,test}_labels.pkl with {split}_images_png.pkl or {split}/*.byte"
_ROW = re.compile(r"^(n\d{8})(\d+)\.jpg$")


def _suffix(path: Path) -> int:
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def read_mini_imagenet(root: Path | str) -> dict[str, ImageSplit]:
    """mini-ImageNet from whichever form is under ``root`` (the pickled caches win)."""
    root = Path(root).expanduser()
    for folder in (root, root / "mini_imagenet", root / "mini-imagenet"):
        if (folder / "mini-imagenet-cache-train.pkl").is_file():
            return read_mini_imagenet_pkl(folder)
        if (folder / "train.csv").is_file():
            return read_mini_imagenet_jpeg(folder)
        images = folder / "images"
        if images.is_dir() and any(re.match(r"n\d{8}$", p.name) for p in images.iterdir()):
            raise UsageError(
                f"{folder} has images/<wnid>/ but no train.csv; put Ravi & Larochelle's "
                "train.csv, val.csv and test.csv beside images/ (they define the split)"
            )
    raise not_found(root, "mini-ImageNet", f"{_MINI_JPEG}, or {_MINI_PKL}")


def read_mini_imagenet_pkl(folder: Path) -> dict[str, ImageSplit]:
    """The three ``mini-imagenet-cache-*.pkl``; classes in sorted wnid order."""
    out = {}
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        path = folder / f"mini-imagenet-cache-{name}.pkl"
        d = load_pickle(path, encoding="latin1")
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in dict(d).items()}
        images, classes = d.get("image_data"), d.get("class_dict")
        if not isinstance(images, np.ndarray) or not isinstance(classes, dict):
            raise UsageError(
                f"{path}: expected a dict with 'image_data' (uint8 [N, 84, 84, 3]) and "
                f"'class_dict', found keys {sorted(map(str, d))[:5]}; use the original file"
            )
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise UsageError(
                f"{path}: image_data is {images.dtype} {list(images.shape)}, "
                "expected uint8 [N, 84, 84, 3]; use the original file"
            )
        names = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in classes)
        by_name = {k.decode() if isinstance(k, bytes) else str(k): v for k, v in classes.items()}
        index = np.concatenate([np.asarray(by_name[n], dtype=np.int64) for n in names])
        if len(index) and (index.min() < 0 or index.max() >= len(images)):
            raise UsageError(
                f"{path}: class_dict points past the {len(images)} images; "
                "the file is damaged, use the original"
            )
        labels = np.repeat(np.arange(len(names)), [len(by_name[n]) for n in names])
        out[split] = ImageSplit(images[index] if len(index) else images[:0], labels, names)
    return out


def read_mini_imagenet_jpeg(folder: Path) -> dict[str, ImageSplit]:
    """MMFewShot's JPEG layout with Ravi's CSVs; images as paths, classes in sorted order."""
    if not (folder / "images").is_dir():
        raise UsageError(f"{folder} has train.csv but no images/ folder; expected {_MINI_JPEG}")
    listing: dict[str, list[Path]] = {}
    out = {}
    for split in ("train", "val", "test"):
        path = folder / f"{split}.csv"
        if not path.is_file():
            raise UsageError(
                f"{path}: missing; the three CSVs of Ravi & Larochelle's split go beside images/"
            )
        with path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]  # the header line
        files, names = [], []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            m = _ROW.match(row[0].strip()) if len(row) == 2 else None
            if m is None or m.group(1) != row[1].strip():
                raise UsageError(
                    f"{path} line {line}: {','.join(row)!r} is not a row like "
                    "'n0153282900000005.jpg,n01532829'; use the original CSV"
                )
            wnid, number = m.group(1), int(m.group(2))
            if wnid not in listing:
                listing[wnid] = sorted((folder / "images" / wnid).glob("*.JPEG"), key=_suffix)
            have = listing[wnid]
            if not 1 <= number <= len(have):
                where = f"images/{wnid} has {len(have)}" if have else f"images/{wnid} is missing"
                raise UsageError(
                    f"{path} line {line} names image {number} (1-based) of {wnid}, but {where}; "
                    "the images folder is incomplete: extract it again"
                )
            files.append(have[number - 1])
            names.append(wnid)
        labels, classes = labels_from(names) if names else (np.zeros(0, np.int64), [])
        out[split] = ImageSplit(files, labels, classes)
    return out


def read_tiered_imagenet(root: Path | str) -> dict[str, ImageSplit]:
    """tiered-ImageNet's three splits; images as PNG bytes or ``.byte`` files."""
    root = Path(root).expanduser()
    folder = next(
        (
            c
            for c in (root, root / "tiered_imagenet", root / "tiered-imagenet")
            if (c / "train_labels.pkl").is_file()
        ),
        None,
    )
    if folder is None:
        raise not_found(root, "tiered-ImageNet", _TIERED)
    return {s: _tiered_split(folder, s) for s in ("train", "val", "test")}


def _tiered_split(folder: Path, split: str) -> ImageSplit:
    path = folder / f"{split}_labels.pkl"
    raw = load_pickle(path, encoding="latin1")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: holds a {type(raw).__name__}, expected a dict; {_TIERED}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    if "label_specific" not in d or "label_specific_str" not in d:
        raise UsageError(
            f"{path}: no 'label_specific'/'label_specific_str' (keys: "
            f"{sorted(map(str, d))[:5]}); use the original labels file"
        )
    specific = np.asarray(d["label_specific"], dtype=np.int64)
    strs = [s.decode() if isinstance(s, bytes) else str(s) for s in d["label_specific_str"]]
    used, labels = np.unique(specific, return_inverse=True)
    if len(used) and (used.min() < 0 or used.max() >= len(strs)):
        raise UsageError(
            f"{path}: a label_specific is beyond label_specific_str's "
            f"{len(strs)} names; the file is damaged"
        )
    names = [strs[i] for i in used]
    groups = None
    if "label_general" in d and "label_general_str" in d:  # the 20/6/8 categories
        general = np.asarray(d["label_general"], dtype=np.int64)
        gstrs = [s.decode() if isinstance(s, bytes) else str(s) for s in d["label_general_str"]]
        if len(general) != len(specific) or (len(general) and general.max() >= len(gstrs)):
            raise UsageError(
                f"{path}: label_general does not match label_specific or "
                "label_general_str; the file is damaged"
            )
        first = np.searchsorted(np.sort(specific), used)  # any image of each class will do
        groups = [gstrs[g] for g in general[np.argsort(specific, kind="stable")][first]]
    pkl = folder / f"{split}_images_png.pkl"
    if pkl.is_file():
        images = load_pickle(pkl, encoding="latin1")
        if not isinstance(images, list | np.ndarray):
            raise UsageError(
                f"{pkl}: holds a {type(images).__name__}, expected a list of "
                "PNG-encoded uint8 arrays; use the original file"
            )
    else:
        unpacked = folder / split
        images = [unpacked / f"{split}_image_{i}.byte" for i in range(len(specific))]
        if not unpacked.is_dir():
            raise UsageError(
                f"{folder}: {split}_labels.pkl but neither {pkl.name} nor "
                f"{split}/{split}_image_<i>.byte; expected {_TIERED}"
            )
    if len(images) != len(specific):
        raise UsageError(
            f"{pkl if pkl.is_file() else folder / split}: {len(images)} images "
            f"for {len(specific)} labels in {path.name}; copy both again"
        )
    return ImageSplit(images, labels.astype(np.int64), names, groups)
