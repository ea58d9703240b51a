"""Reading an image as its owner sees it, for training and prediction alike.

Both the folder family's cache (``data/``) and the preprocessing of ``metagrad adapt``
(``tasks/preprocess.py``) decode user files through :func:`upright`, so a phone photo or a
drawing on a transparent background reaches the model the same way when it is trained on and
when it is classified.
"""

from __future__ import annotations

from PIL import Image, ImageOps

_ALPHA_MODES = ("RGBA", "LA", "La", "PA", "RGBa")


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as the camera meant it (EXIF orientation), transparent pixels laid on
    white paper (a drawing saved on a transparent background); other modes as they are."""
    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(paper, rgba).convert("RGB")
