"""CUB-200-2011 (Wah et al., 2011) from the extracted ``CUB_200_2011.tgz``.

The layout is ``CUB_200_2011/images/<NNN.Class_Name>/*.jpg``. The split is the one MMFewShot,
Baseline++ and torchmeta use: the 200 classes in numeric order, index ``i`` (0-based) goes to
train if ``i % 2 == 0`` (100 classes), val if ``i % 4 == 1`` (50), test if ``i % 4 == 3`` (50).
(learn2learn's 140/30/30 is Meta-Dataset's split and not this one.) Images stay undecoded
paths; ``metagrad data prepare cub`` decodes them once.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from metagrad.data.natural import ImageSplit, not_found
from metagrad.errors import UsageError

CUB_CLASSES = 200
_FOLDER = re.compile(r"^(\d{3})\.(.+)$")
_EXPECTED = "CUB_200_2011/images/<NNN.Class_Name>/*.jpg"


def cub_split_of(index: int) -> str | None:
    """The split of the class at 0-based ``index`` in numeric order (``None``: unused,
    never happens for 200 classes: every index is even, 1 or 3 mod 4)."""
    return "train" if index % 2 == 0 else {1: "val", 3: "test"}.get(index % 4)


def cub_images_dir(root: Path) -> Path:
    """The ``images`` folder under ``root`` (the extraction folder, ``CUB_200_2011`` itself,
    or its ``images``)."""
    root = Path(root).expanduser()
    for cand in (root / "CUB_200_2011" / "images", root / "images", root):
        if cand.is_dir() and any(_FOLDER.match(p.name) for p in cand.iterdir() if p.is_dir()):
            return cand
    raise not_found(root, "CUB-200-2011", _EXPECTED)


def read_cub(root: Path | str) -> dict[str, ImageSplit]:
    """CUB's three splits, images as paths to their JPEGs.

    Raises:
        UsageError: no CUB layout under ``root``, or a class folder missing or doubled (the
            split is by index, so a missing class would shift every later one).
    """
    images = cub_images_dir(Path(root))
    folders: dict[int, Path] = {}
    for p in sorted(images.iterdir()):
        m = _FOLDER.match(p.name)
        if not (p.is_dir() and m):
            continue
        number = int(m.group(1))
        if number in folders:
            raise UsageError(
                f"{images}: two folders for class {number:03d} ({folders[number].name}, "
                f"{p.name}); keep the one from CUB_200_2011.tgz"
            )
        folders[number] = p
    missing = sorted(set(range(1, CUB_CLASSES + 1)) - set(folders))
    extra = sorted(set(folders) - set(range(1, CUB_CLASSES + 1)))
    if missing or extra:
        shown = ", ".join(f"{n:03d}" for n in (missing or extra)[:5])
        more = " ..." if len(missing or extra) > 5 else ""
        what = "is missing the class folders" if missing else "has unknown class folders"
        raise UsageError(
            f"{images} {what} {shown}{more} ({len(folders)} found, {CUB_CLASSES} expected, "
            "001 to 200); extract CUB_200_2011.tgz again: the split is by class index"
        )
    parts: dict[str, tuple[list[Path], list[int], list[str]]] = {
        s: ([], [], []) for s in ("train", "val", "test")
    }
    for index, number in enumerate(sorted(folders)):
        files, labels, names = parts[cub_split_of(index) or "train"]
        for f in sorted(folders[number].glob("*.jpg")):
            files.append(f)
            labels.append(len(names))
        names.append(folders[number].name)
    return {
        s: ImageSplit(files, np.asarray(labels, dtype=np.int64), names)
        for s, (files, labels, names) in parts.items()
    }
