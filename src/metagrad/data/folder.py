"""A user's own data set: a folder with one sub-folder of images per class.

``root/<class>/*.{png,jpg,jpeg}`` (the folder name is the class name), split into meta-training,
validation and test classes either by the user (``root/train/<class>/``, ``root/val/...``,
``root/test/...``) or, without those, by a seeded draw of the classes (``fractions`` of them
for val and test). Images of any size and mode (1-bit, grey, RGB, RGBA) are decoded to RGB and
stored like CUB's: short side resized to ``store``, centre square kept, in a memory-mapped
cache keyed by the folder, its split and a fingerprint of its files (a changed folder is
prepared again; an unchanged one never).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from metagrad.data.natural import SPLIT_NAMES, ImageSplit
from metagrad.data.prepare import NaturalSet, load_prepared, prepared_meta, write_cache
from metagrad.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: Path) -> list[Path]:
    """The images of one folder, sorted: ``.png`` / ``.jpg`` / ``.jpeg`` files (any case),
    hidden files skipped, not recursive.

    Raises:
        UsageError: a sub-folder or a file of another kind is there (named, with the fix).
    """
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            raise UsageError(
                f"{p} is a folder inside the class folder {folder}; a class folder holds "
                "images only: move its images up or the folder out"
            )
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(
                f"{p} is not an image file (expected .png, .jpg or .jpeg); move it out of {folder}"
            )
        files.append(p)
    return files


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` for every (non-hidden) sub-folder of ``root``, sorted.

    Raises:
        UsageError: no class folders, an empty class folder, a stray file, or an image
            folder nested in a class folder.
    """
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder; give the folder holding one folder per class")
    stray = [p for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if stray:
        raise UsageError(
            f"{stray[0]} is a file directly in {root}, which must hold one folder per class "
            "(the folder name is the class name); move the images into class folders"
        )
    classes = {
        p.name: image_files(p) for p in sorted(root.iterdir()) if p.is_dir() and p.name[0] != "."
    }
    if not classes:
        raise UsageError(f"{root} has no class folders; put each class's images in a folder")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise UsageError(
            f"the class folder {root / empty[0]} has no images (.png, .jpg, .jpeg); add some "
            "or remove the folder"
        )
    return classes


def _split(classes: dict[str, list[Path]]) -> ImageSplit:
    names = sorted(classes)
    files = [f for n in names for f in classes[n]]
    labels = np.repeat(np.arange(len(names)), [len(classes[n]) for n in names])
    return ImageSplit(files, labels.astype(np.int64), names)


def read_folder(
    root: Path | str, fractions: tuple[float, float] = (0.2, 0.2), seed: int = 0
) -> dict[str, ImageSplit]:
    """The three splits of a folder data set, images as paths.

    Args:
        root: ``root/<class>/...``, or ``root/{train,val,test}/<class>/...``.
        fractions: Shares of the classes for validation and test when ``root`` has no
            ``train/ val/ test/`` folders (each at least one class).
        seed: Seeds that draw of the classes.

    Raises:
        UsageError: a bad layout (see :func:`class_folders`), or too few classes to split.
    """
    root = Path(root).expanduser()
    named = [root / s for s in SPLIT_NAMES]
    if any(p.is_dir() for p in named):
        missing = [p.name for p in named if not p.is_dir()]
        if missing:
            raise UsageError(
                f"{root} has {', '.join(p.name for p in named if p.is_dir())}/ but no "
                f"{'/, '.join(missing)}/; give all three split folders, or none (then the "
                "classes are split at random)"
            )
        return {s: _split(class_folders(root / s)) for s in SPLIT_NAMES}
    classes = class_folders(root)
    names = sorted(classes)
    n_val, n_test = (max(1, round(f * len(names))) for f in fractions)
    if len(names) - n_val - n_test < 1:
        raise UsageError(
            f"{root} has {len(names)} class(es); splitting them into train, val and test "
            "needs at least 3 (or give train/ val/ test/ folders)"
        )
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    parts = {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    return {s: _split({n: classes[n] for n in parts[s]}) for s in SPLIT_NAMES}


def _fingerprint(splits: dict[str, ImageSplit]) -> str:
    """A digest of every file's split, path, size and modification time."""
    h = hashlib.sha256()
    for split, s in splits.items():
        for p, label in zip(s.images, s.labels, strict=True):
            st = Path(p).stat()
            h.update(
                f"{split}\0{s.class_names[label]}\0{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
    return h.hexdigest()


def prepare_folder(
    root: Path | str,
    store: int,
    cache: Path | str | None = None,
    *,
    fractions: tuple[float, float] = (0.2, 0.2),
    seed: int = 0,
    log=None,
) -> dict[str, ImageSplit]:
    """The prepared splits of a folder data set, (re)preparing the cache only when the
    folder, its split or its files changed.

    Args:
        root: See :func:`read_folder`.
        store: Side of the stored squares (e.g. 96 for an 84x84 input with MMFewShot's test
            resize to 96 and centre crop).
        cache: The cache root (``None``: the user cache).
        fractions, seed: See :func:`read_folder`.
        log: Told what is being prepared.
    """
    root = Path(root).expanduser().resolve()
    splits = read_folder(root, fractions, seed)
    fingerprint = _fingerprint(splits)
    key = "folder-" + hashlib.sha256(f"{root}\0{store}".encode()).hexdigest()[:16]
    meta = prepared_meta(key, cache)
    if meta is None or meta.get("fingerprint") != fingerprint:
        spec = NaturalSet(None, None, store)
        if log is not None:
            log(f"preparing {root} (once per change of its files)")
        for line in write_cache(
            "folder", spec, splits, root, cache, log, key=key, extra={"fingerprint": fingerprint}
        ):
            if log is not None:
                log(line)
    return load_prepared(key, cache)
