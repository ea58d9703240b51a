"""``metagrad data prepare``: check a natural-image data set's layout, decode it once, cache it.

The cache is one folder per data set, ``<cache>/<name>/``: ``{split}_images.npy`` (uint8
``[N, S, S, 3]``, read memory-mapped by :func:`load_prepared`), ``{split}_labels.npy`` and
``meta.json`` (source, size, class names), written last, so a folder without it is an
interrupted preparation and is never read. Every file goes to a temporary sibling first and is
renamed into place. The default cache is ``$XDG_CACHE_HOME/metagrad`` (``~/.cache/metagrad``),
never the data root, which is often read-only (a shared data disk).

Stored size (a decision, documented in the README): images decoded from files of any size
(CUB, mini-ImageNet's JPEGs) are stored with the short side resized to 96 and the centre
96x96 kept. MMFewShot's test transform (short side 96, centre crop 84) is then an exact centre
crop of the cache, and its training RandomResizedCrop(84) samples the 96x96 square (it sees a
little less of the long side than on the full JPEG; and Pillow's bilinear resize antialiases
when shrinking where MMFewShot's mmcv/cv2 one does not, so pixels differ slightly). Sources
already 84x84 (the mini-ImageNet pickles, tiered-ImageNet) are stored as they are, CIFAR at
32x32: neither is ever upscaled.

Speed (measured by ``tests/data/test_prepare.py::test_prepare_speed`` on this machine, 2 shared
cores, one process, synthetic 84x84 random-pixel images, check and write included): from the
mini-ImageNet pickle ~10,000 images/s (2,000 images; a copy, the pickle load and the write
dominate); from tiered-ImageNet's PNG pickle ~3,700 images/s (1,824 images; PNG decoding
dominates, so the full 779,165 images take about 3.5 minutes, once). From JPEG files of
ImageNet's typical 500x375 (a one-off measurement, 200 files): ~580 images/s, about 100 s for
mini-ImageNet's 60,000 and 20 s for CUB's 11,788. Pillow's JPEG draft mode would double that
but decodes at a reduced DCT scale, i.e. other pixels than MMFewShot's full decode: not used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metagrad.data.cifar import read_cifar_fs, read_fc100
from metagrad.data.cub import read_cub
from metagrad.data.imagenet import read_mini_imagenet, read_tiered_imagenet
from metagrad.data.natural import SPLIT_NAMES, ImageSplit, decode, square
from metagrad.errors import UsageError

_MAX_SHOWN = 20  # problems listed; a wholly wrong folder would otherwise print thousands


@dataclass(frozen=True)
class NaturalSet:
    """How to read one data set and what a complete copy holds."""

    read: Callable[[Path], dict[str, ImageSplit]] | None  # None: the caller reads (folders)
    classes: tuple[int, int, int] | None  # train, val, test (None: any number)
    size: int  # stored side for sources of any size (already-square sources keep theirs)
    uniform: bool = False  # every class has as many images (600) in the release
    groups: tuple[int, int, int] | None = None  # categories or superclasses per split


NATURAL_SETS = {
    "cub": NaturalSet(read_cub, (100, 50, 50), 96),
    "mini-imagenet": NaturalSet(read_mini_imagenet, (64, 16, 20), 96, uniform=True),
    "tiered-imagenet": NaturalSet(read_tiered_imagenet, (351, 97, 160), 84, groups=(20, 6, 8)),
    "cifar-fs": NaturalSet(read_cifar_fs, (64, 16, 20), 32, uniform=True),
    "fc100": NaturalSet(read_fc100, (60, 20, 20), 32, uniform=True, groups=(12, 4, 4)),
}


class LayoutError(UsageError):
    """A data set's layout has problems; ``problems`` lists them, one line each."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metagrad"


def check_layout(
    name: str, splits: dict[str, ImageSplit], spec: NaturalSet | None = None
) -> list[str]:
    """Problems with the class (and category) counts, the images per class (none; or, where
    the release has as many of every class, a class with another count) and classes in two
    splits."""
    problems = []
    seen: dict[str, str] = {}
    spec = spec or NATURAL_SETS[name]
    wanted = spec.classes or (None, None, None)
    for i, (split, want) in enumerate(zip(SPLIT_NAMES, wanted, strict=True)):
        s = splits[split]
        if want is not None and len(s.class_names) != want:
            problems.append(f"{split}: {len(s.class_names)} classes, {name} has {want}")
        if spec.groups and s.groups is not None and len(set(s.groups)) != spec.groups[i]:
            problems.append(
                f"{split}: {len(set(s.groups))} categories, {name} has {spec.groups[i]}"
            )
        counts = s.per_class()
        usual = int(np.bincount(counts).argmax()) if len(counts) else 0
        for c, n in zip(s.class_names, counts, strict=True):
            if n == 0:
                problems.append(f"{split}: class {c} has no images")
            elif spec.uniform and n != usual:
                # The release has 600 of every class: fewer means a partial copy.
                problems.append(f"{split}: class {c} has {n} images, the others {usual}")
            if c in seen:
                problems.append(f"class {c} is in both {seen[c]} and {split}")
            seen[c] = split
    return problems


def _side(split: ImageSplit, size: int) -> int:
    """The stored side: the images' own if they are all one square size, else ``size``."""
    if isinstance(split.images, np.ndarray) and split.images.ndim == 4:
        h, w = split.images.shape[1:3]
        if h == w and h <= size:
            return h
    return size


def _write(split: ImageSplit, side: int, tmp: Path, name: str, problems: list[str]) -> None:
    """Decode and square every image of ``split`` into a uint8 ``.npy`` at ``tmp``."""
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(len(split), side, side, 3)
    )
    if isinstance(split.images, np.ndarray) and split.images.shape[1:] == out.shape[1:]:
        out[:] = split.images  # the pickled caches: already decoded at the stored size
    else:
        for i, source in enumerate(split.images):
            try:
                out[i] = square(decode(source), side)
            except (ValueError, FileNotFoundError) as e:
                problems.append(f"{name}: {split.where(i)}: {e}")
    out.flush()
    del out


def prepare(
    name: str,
    root: Path | str,
    cache: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Check ``root``'s copy of ``name``, then write its cache; returns what was written.

    ``progress`` is told before each split is decoded (tiered-ImageNet takes minutes).

    Raises:
        UsageError: an unknown name, no such layout under ``root``, an unwritable cache.
        LayoutError: the layout has problems (all listed in ``problems``); nothing is written.
    """
    spec = NATURAL_SETS[name]
    root = Path(root).expanduser()
    assert spec.read is not None
    return write_cache(name, spec, spec.read(root), root, cache, progress)


def write_cache(
    name: str,
    spec: NaturalSet,
    splits: dict[str, ImageSplit],
    root: Path,
    cache: Path | str | None,
    progress: Callable[[str], None] | None = None,
    *,
    key: str | None = None,
    extra: dict | None = None,
) -> list[str]:
    """Check ``splits`` (read from ``root``) and write them to the cache folder ``key``
    (default ``name``) with ``extra`` in its ``meta.json``; what :func:`prepare` does after
    reading. Raises as :func:`prepare`."""
    problems = check_layout(name, splits, spec)
    folder = (Path(cache).expanduser() if cache is not None else default_cache()) / (key or name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"cannot write the cache {folder} ({e.strerror}); pass --cache DIR "
            "naming a writable folder"
        ) from None
    meta: dict = {"name": name, "root": str(root.resolve()), "version": 1, "splits": {}}
    meta.update(extra or {})
    # Temporary names are per process, so two preparations never write into one file; a
    # previous complete cache stays readable until the new one is complete.
    tmp = {
        (split, kind): folder / f".{split}_{kind}.{os.getpid()}.tmp.npy"
        for split in splits
        for kind in ("images", "labels")
    }
    try:
        for split, s in splits.items():
            side = _side(s, spec.size)
            if progress is not None:
                progress(f"{split}: decoding {len(s)} images of {len(s.class_names)} classes")
            _write(s, side, tmp[split, "images"], split, problems)
            np.save(tmp[split, "labels"], s.labels)
            meta["splits"][split] = {
                "images": len(s),
                "side": side,
                "classes": s.class_names,
                "groups": s.groups,
            }
        if problems:
            shown = problems[:_MAX_SHOWN]
            if len(problems) > _MAX_SHOWN:
                shown.append(f"... and {len(problems) - _MAX_SHOWN} more")
            raise LayoutError(
                f"{len(problems)} problem(s) in the {name} data under {root}, nothing cached: "
                f"{problems[0]}" + (" (all listed above)" if len(problems) > 1 else ""),
                shown,
            )
        (folder / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten
        for (split, kind), path in tmp.items():
            os.replace(path, folder / f"{split}_{kind}.npy")
        tmp_meta = folder / f".meta.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, folder / "meta.json")
    except OSError as e:
        raise UsageError(
            f"cannot write the cache {folder} ({e.strerror}); free space or pass "
            "--cache DIR naming another folder"
        ) from None
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return [
        f"{split}: {len(s.class_names)} classes, {len(s)} images "
        f"({s.per_class().min() if len(s.class_names) else 0}-"
        f"{s.per_class().max() if len(s.class_names) else 0} per class), "
        f"{meta['splits'][split]['side']}x{meta['splits'][split]['side']} -> "
        f"{folder / f'{split}_images.npy'}"
        for split, s in splits.items()
    ]


def prepared_meta(name: str, cache: Path | str | None = None) -> dict | None:
    """The ``meta.json`` of ``name``'s complete cache, or ``None`` if there is none."""
    folder = (Path(cache).expanduser() if cache is not None else default_cache()) / name
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def prepared_from(name: str, cache: Path | str | None = None) -> Path | None:
    """The data root that ``name``'s complete cache was prepared from, or ``None``."""
    root = (prepared_meta(name, cache) or {}).get("root")
    return Path(root) if isinstance(root, str) else None


def load_prepared(name: str, cache: Path | str | None = None) -> dict[str, ImageSplit]:
    """The cached splits of ``name``, images memory-mapped (nothing is decoded).

    Raises:
        UsageError: nothing (complete) is cached for ``name``; the message says how to prepare it.
    """
    folder = (Path(cache).expanduser() if cache is not None else default_cache()) / name
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"{name} is not prepared in {folder}; run `metagrad data prepare "
            f"{name} --root DIR` first (--cache DIR if you prepared elsewhere)"
        ) from None
    return {
        split: ImageSplit(
            np.load(folder / f"{split}_images.npy", mmap_mode="r"),
            np.load(folder / f"{split}_labels.npy"),
            info["classes"],
            info.get("groups"),
        )
        for split, info in meta["splits"].items()
    }
