"""The common in-memory form of a natural-image split, and decoding one image.

Every reader (``cub.py``, ``imagenet.py``, ``cifar.py``) returns ``{"train": ImageSplit,
"val": ..., "test": ...}``. An :class:`ImageSplit` holds its images either decoded (a uint8
``[N, H, W, 3]`` array: the pickled caches, CIFAR) or as sources decoded on demand (a
:class:`~pathlib.Path` to a JPEG/PNG file, or the encoded bytes of one): a full-size
mini-ImageNet is 60,000 JPEGs, decoded once by ``metagrad data prepare`` and never again.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from metagrad.errors import UsageError
from metagrad.imaging import upright

SPLIT_NAMES = ("train", "val", "test")
Source = Path | bytes | np.ndarray  # a file, its encoded bytes, or a decoded HxWx3 image


@dataclass
class ImageSplit:
    """One split of a data set.

    Attributes:
        images: decoded uint8 ``[N, H, W, 3]``, or ``N`` sources (see :func:`decode`).
        labels: int64 ``[N]``, indices into ``class_names``, ``0 .. C-1``.
        class_names: the split's classes (wnids, CUB folder names, CIFAR fine names).
        groups: where a data set groups its classes (tiered-ImageNet's categories, FC100's
            superclasses), each class's group; else ``None``.
    """

    images: np.ndarray | Sequence[Source]
    labels: np.ndarray
    class_names: list[str]
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def per_class(self) -> np.ndarray:
        """Images per class, ``[C]``."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def where(self, i: int) -> str:
        """Where image ``i`` came from, for an error message."""
        item = self.images[i]
        if isinstance(item, Path):
            return str(item)
        return f"image {i} of class {self.class_names[self.labels[i]]}"


def decode(source: Source) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` RGB image from a file, its encoded bytes (or a uint8 array of
    them, as tiered-ImageNet pickles them), or an image already decoded.

    Raises:
        ValueError: the source is not a decodable image (the caller names the file).
    """
    if isinstance(source, np.ndarray) and source.ndim == 3:
        return source
    raw = source.tobytes() if isinstance(source, np.ndarray) else source
    try:
        with Image.open(raw if isinstance(raw, Path) else io.BytesIO(raw)) as img:
            # CMYK / greyscale JPEGs exist in ImageNet; EXIF orientation and transparency
            # as metagrad adapt reads a user's files (metagrad.imaging).
            return np.asarray(upright(img).convert("RGB"))
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        # Pillow's message repeats the file name, which the caller already names.
        why = str(e).replace(f" '{raw}'", "") if isinstance(raw, Path) else str(e)
        raise ValueError(f"not a decodable image ({type(e).__name__}: {why})") from None


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear, as MMFewShot's ``Resize``), then crop
    the centre ``size x size``. An image already ``size x size`` is returned as is."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def labels_from(names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer labels for per-image class names, classes in sorted order."""
    classes, labels = np.unique(np.asarray(names), return_inverse=True)
    return labels.astype(np.int64), [str(c) for c in classes]


# What each layout's root holds, to say "this looks like X" when a reader is pointed at the
# wrong one (the most likely wrong root is another data set's).
_SIGNS = {
    "cub": ("CUB_200_2011/images", "images/001.Black_footed_Albatross"),
    "mini-imagenet (JPEG + CSV)": ("train.csv", "mini_imagenet/train.csv"),
    "mini-imagenet (pickled cache)": ("mini-imagenet-cache-train.pkl",),
    "tiered-imagenet": ("train_labels.pkl", "tiered_imagenet/train_labels.pkl"),
    "cifar-fs / fc100": ("cifar-100-python/meta", "meta"),
}


def not_found(root: Path, name: str, expected: str) -> UsageError:
    """The error for a root holding no ``name`` layout: what was expected, what is there."""
    if not root.is_dir():
        return UsageError(f"--root {root} is not a directory; give the folder holding {expected}")
    seen = [k for k, signs in _SIGNS.items() if any((root / s).exists() for s in signs)]
    there = f"it looks like {seen[0]}'s layout" if seen else "no known layout is there"
    return UsageError(
        f"no {name} data under --root {root}: expected {expected}, but {there}; give the folder "
        "that holds it (or the data set's name that matches it)"
    )
