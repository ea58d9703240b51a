"""How an image becomes a model's input: the preprocessing record every image run keeps.

A meta-trained model knows only inputs made the way its training images were. A
:class:`Preprocessing` record says how (JSON-able: :meth:`~Preprocessing.to_dict`), each image
task family states its own (``metagrad.train.build.INPUTS``), every run writes it beside its
config (``preprocessing.json``) and ``metagrad.load`` reads it back, so that a user's image
(PNG or JPEG; 1-bit, grey, palette, RGB or RGBA; any size) becomes exactly the tensor a
training image of the same picture became:

1. turned as the camera meant it (EXIF orientation); transparency laid over white paper;
2. converted to the model's channels (grey: Pillow's luma ``"L"``; colour: ``"RGB"``);
3. grey images as floats in ``[0, 1]``: binarised first when ``threshold`` is set (a pixel
   at or above it is paper: Omniglot's files are 1-bit), then inverted when ``invert`` is set
   (ink = 1, paper = 0, as Omniglot's training images); colour images stay 8-bit
   (``invert``: ``255 - v``);
4. resized: with ``resize``, the short side to ``resize`` and the centre ``size x size`` cut
   out (MMFewShot's test transform: 96, then 84); without, the whole image to ``size x size``
   (the training images were square, as Omniglot's 105x105 drawings; others are stretched);
5. quantised to 8 bits as the training caches store images (``rint(255 v)``), then to floats:
   ``v / 255``, or with ``mean`` / ``std`` (0-255 scale) ``(v - mean) / std``.

Grey images are resized as 32-bit floats and colour images as 8-bit RGB, as the Omniglot cache
(``metagrad.data.drawings``) and the natural-image cache (``metagrad.data.natural``) do: the
result equals the cached training arrays bit for bit (tested on the Omniglot files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from metagrad.errors import UsageError
from metagrad.imaging import upright

FORMAT, VERSION = "metagrad-preprocessing", 1
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# MMFewShot's normalisation of mini-ImageNet, tiered-ImageNet and CUB (0-255 scale).
MMFEWSHOT_MEAN = (123.675, 116.28, 103.53)
MMFEWSHOT_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preprocessing:
    """The steps from an image to a model input ``[channels, size, size]`` (module docstring).

    Attributes:
        size: side of the square input (28 for Omniglot, 84 for the natural-image sets).
        channels: 1 (grey) or 3 (RGB).
        invert: ink = 1: dark strokes become high values (Omniglot).
        threshold: binarise grey images before resizing, paper where the grey level is at
            least this (128 for Omniglot's 1-bit files); None: keep the grey levels.
        resize: resize the short side to this, then cut out the centre ``size x size``; None:
            resize the whole image to ``size x size``.
        resample: Pillow's filter: "lanczos" (Omniglot), "bilinear" (MMFewShot), "bicubic",
            "box", "hamming" or "nearest".
        mean: per-channel mean on the 0-255 scale to subtract; None: scale to ``[0, 1]``.
        std: per-channel standard deviation on the 0-255 scale (with ``mean``).
    """

    size: int
    channels: int = 1
    invert: bool = False
    threshold: int | None = None
    resize: int | None = None
    resample: str = "lanczos"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (problem := self._problem()) is not None:
            raise UsageError(f"preprocessing: {problem}")

    def _problem(self) -> str | None:
        if not _count(self.size):
            return f"size must be a whole number of pixels >= 1, got {self.size!r}"
        if self.channels not in (1, 3):
            return f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}"
        if self.resample not in FILTERS:
            return f"resample must be one of {sorted(FILTERS)}, got {self.resample!r}"
        if self.threshold is not None and (self.channels != 1 or not 1 <= self.threshold <= 255):
            return f"threshold must be in 1..255 for grey images, got {self.threshold!r}"
        if self.resize is not None and (not _count(self.resize) or self.resize < self.size):
            return f"resize must be a short side >= size ({self.size}), got {self.resize!r}"
        if (self.mean is None) != (self.std is None):
            return "mean and std go together: give both or neither"
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.channels:
                return f"{name} needs {self.channels} values (one per channel), got {value!r}"
        if self.std is not None and min(self.std) <= 0:
            return f"std must be > 0, got {self.std!r}"
        return None

    @property
    def shape(self) -> tuple[int, int, int]:
        """One input's shape ``(channels, size, size)``."""
        return (self.channels, self.size, self.size)

    # ------------------------------------------------------------------ record
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (``format`` and ``version`` first)."""
        record = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"format": FORMAT, "version": VERSION, **record}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], source: str = "preprocessing") -> Preprocessing:
        """The record :meth:`to_dict` wrote.

        Raises:
            UsageError: another format or version, an unknown or missing key, a bad value;
                the message names ``source``.
        """
        if not isinstance(record, Mapping) or record.get("format") != FORMAT:
            raise UsageError(f"{source}: not a metagrad preprocessing record")
        if record.get("version") != VERSION:
            raise UsageError(
                f"{source}: preprocessing version {record.get('version')!r}, expected {VERSION}: "
                "it was written by another metagrad version"
            )
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k not in ("format", "version")}
        if unknown := sorted(set(values) - names):
            raise UsageError(f"{source}: unknown preprocessing key {unknown[0]!r}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            return cls(**values)
        except TypeError as e:  # a required key missing
            raise UsageError(f"{source}: {e}") from None
        except UsageError as e:
            raise UsageError(f"{source}: {e}") from None

    # ------------------------------------------------------------------ images
    def pixels(self, image: Image.Image) -> np.ndarray:
        """``image`` as the training cache stores images: uint8 ``[size, size]`` (grey) or
        ``[size, size, 3]`` (RGB)."""
        image = upright(image)
        if self.channels == 1:
            levels = _grey_levels(image)  # [H, W] float32 on the 0-255 scale, paper = 255
            if self.threshold is not None:
                values = (levels >= self.threshold).astype(np.float32)  # paper 1, ink 0
            else:
                values = levels / np.float32(255.0)
            if self.invert:
                values = 1.0 - values
            values = np.asarray(self._geometry(Image.fromarray(values)))
            return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        rgb = np.asarray(image.convert("RGB"))
        if self.invert:
            rgb = 255 - rgb
        return np.asarray(self._geometry(Image.fromarray(rgb)))

    def tensor(self, image: Image.Image) -> Tensor:
        """``image`` as the model's input ``[channels, size, size]`` float32."""
        t = torch.from_numpy(np.array(self.pixels(image))).to(torch.float32)  # a writable copy
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()
        t = t.div_(255.0)
        if self.mean is None:
            return t
        # In the order of metagrad.tasks.augment's normalisation, so the floats are its own.
        mean = torch.tensor(self.mean, dtype=torch.float32).div_(255.0).reshape(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).div_(255.0).reshape(-1, 1, 1)
        return (t - mean) / std

    def batch(self, images: Sequence[Image.Image]) -> Tensor:
        """Several images as one batch ``[N, channels, size, size]``."""
        if not images:
            raise UsageError("no images to preprocess: give at least one")
        return torch.stack([self.tensor(image) for image in images])

    def _geometry(self, image: Image.Image) -> Image.Image:
        """Resize (and crop) to ``size x size`` with the record's filter."""
        size, w, h = self.size, *image.size
        if self.resize is None:
            return image if (w, h) == (size, size) else image.resize((size, size), self._filter)
        # The short side to `resize` (data.natural.square's rounding), then the centre square.
        scale = self.resize / min(w, h)
        nw, nh = max(self.resize, round(w * scale)), max(self.resize, round(h * scale))
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), self._filter)
        top, left = (nh - size) // 2, (nw - size) // 2
        return image.crop((left, top, left + size, top + size))

    @property
    def _filter(self) -> Image.Resampling:
        return FILTERS[self.resample]


def omniglot(image_size: int = 28, resample: str = "lanczos") -> Preprocessing:
    """Omniglot's: 1-bit drawings binarised at 128, ink = 1, resized whole (Lanczos), ``/255``."""
    return Preprocessing(image_size, 1, invert=True, threshold=128, resample=resample)


def natural(
    size: int = 84,
    resize: int | None = 96,
    mean: tuple[float, ...] | None = MMFEWSHOT_MEAN,
    std: tuple[float, ...] | None = MMFEWSHOT_STD,
) -> Preprocessing:
    """MMFewShot's test transform of natural images: RGB, short side to 96 (bilinear), centre
    crop 84, normalised with the ImageNet mean and std on the 0-255 scale."""
    return Preprocessing(size, 3, resize=resize, resample="bilinear", mean=mean, std=std)


def _grey_levels(image: Image.Image) -> np.ndarray:
    """Grey levels ``[H, W]`` as float32 on the 0-255 scale (16-bit images rescaled)."""
    if image.mode.startswith("I"):  # 16-bit PNGs open as "I;16" or "I"
        return (np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.float32)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
