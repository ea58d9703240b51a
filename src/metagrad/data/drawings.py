"""Omniglot's binary drawings to model inputs: which value is paper, then invert, resize and
quantise (ink = 255)."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from metagrad.errors import UsageError

_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def paper_convention(images: np.ndarray, source: str) -> np.ndarray:
    """``images`` as booleans, True = paper, whatever binary encoding a file used.

    Booleans follow the documented encoding. Integers are ambiguous (is 1 ink or paper?), and
    Omniglot drawings are about 92% paper, so the value covering most pixels is paper: a file
    written as 1 = ink (or 255 = ink) is read the right way round, with a warning, instead of
    being silently inverted.

    Raises:
        UsageError: the values are not two-valued (0/1, 0/255 or booleans).
    """
    values = np.unique(images[: min(len(images), 8)])  # a few characters tell the encoding
    if images.dtype != np.bool_ and not set(values.tolist()) <= {0, 1, 255} | {True, False}:
        raise UsageError(
            f"{source}: images must be binary (bool True = paper, or 0/1 or 0/255), got "
            f"{images.dtype} with {len(values)} distinct values (e.g. {values[:4].tolist()}); "
            "save the drawings as booleans, True = paper"
        )
    paper = images.astype(bool)
    if images.dtype == np.bool_:  # booleans are documented as True = paper: taken as written
        return paper
    nonzero = float(paper[: min(len(paper), 64)].mean()) if paper.size else 1.0
    if nonzero < 0.5:  # nonzero marks ink: the opposite of the official encoding
        warnings.warn(
            f"{source}: nonzero pixels cover {nonzero:.0%} of the images, so they are ink "
            "(the official encoding is True = paper); reading them as ink",
            stacklevel=3,
        )
        return ~paper
    return paper


def preprocess(paper: np.ndarray, image_size: int = 28, resample: str = "lanczos") -> np.ndarray:
    """Invert, resize and quantise binary drawings.

    Args:
        paper: ``[..., H, W]`` bool, True = white paper (the official encoding).
        image_size: Output side length.
        resample: ``"lanczos"`` or ``"box"`` (area average), applied to the float image.

    Returns:
        ``[..., image_size, image_size]`` uint8 with ink = 255.
    """
    if resample not in _FILTERS:
        raise ValueError(f"resample must be one of {sorted(_FILTERS)}, got {resample!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    flat = paper.reshape(-1, *paper.shape[-2:])
    out = np.empty((len(flat), image_size, image_size), np.uint8)
    for i, drawing in enumerate(flat):
        ink = (~drawing.astype(bool)).astype(np.float32)  # [H, W] in {0, 1}
        if ink.shape != (image_size, image_size):
            img = Image.fromarray(ink).resize((image_size, image_size), _FILTERS[resample])
            ink = np.asarray(img)
        out[i] = np.rint(np.clip(ink, 0.0, 1.0) * 255.0)
    return out.reshape(*paper.shape[:-2], image_size, image_size)
