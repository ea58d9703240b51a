"""A user's own images: a support folder of classes, query files and folders, each image read
with one clear line for anything wrong.

- :func:`support_classes`: ``DIR/<class>/<image>``, one sub-folder per class (its name is the
  class's name), classes in sorted order, two or more, each with one or more images and nothing
  else (hidden files skipped);
- :func:`query_files`: image files as given, and the ``.png`` / ``.jpg`` / ``.jpeg`` files of
  folders (not recursive, hidden files skipped, sorted);
- :func:`read_image`: one decoded image, or an error naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from metagrad.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_KINDS = "/".join(IMAGE_SUFFIXES)


def is_image_name(path: Path) -> bool:
    """Whether ``path`` has an image suffix (any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` whose names do not start with a dot, sorted."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except PermissionError:
        raise UsageError(f"cannot read the folder {folder} (permission denied)") from None


def support_classes(root: Path | str) -> dict[str, list[Path]]:
    """The classes of a support folder: ``{class name: its image files}``, sorted by name.

    Raises:
        UsageError: ``root`` is missing or no folder; it holds files next to the class
            folders, fewer than two classes, a class folder without images, a sub-folder or a
            file that is not an image inside a class folder. Each names the path and the fix.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(
            f"support folder {root} does not exist: give a folder holding one sub-folder of "
            "images per class"
        )
    if not root.is_dir():
        raise UsageError(
            f"support {root} is a file: give a folder holding one sub-folder of images per class"
        )
    entries = _visible(root)
    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise UsageError(
            f"support folder {root} holds the file {loose[0].name} next to its class folders: "
            "put every image in the sub-folder of its class (the folder name is the class name)"
        )
    classes = {p.name: _class_images(p) for p in entries}
    if len(classes) < 2:
        found = f"one class ({next(iter(classes))})" if classes else "no class folders"
        raise UsageError(
            f"support folder {root} has {found}: a classifier needs two or more classes, one "
            "sub-folder of images each"
        )
    return classes


def _class_images(folder: Path) -> list[Path]:
    entries = _visible(folder)
    if nested := [p for p in entries if p.is_dir()]:
        raise UsageError(
            f"class folder {folder} holds the sub-folder {nested[0].name}: each class is one "
            f"folder of images, one level deep; move its images up or make it a class of its own"
        )
    if other := [p for p in entries if not is_image_name(p)]:
        raise UsageError(
            f"{other[0]} is not a {_KINDS} image: convert it to PNG or JPEG, or move it out of "
            "the support folder"
        )
    if not entries:
        raise UsageError(
            f"class folder {folder} has no images ({_KINDS}): add one or more, or remove the folder"
        )
    return entries


def query_files(paths: Sequence[Path | str]) -> list[tuple[str, Path]]:
    """The query images of ``paths``, each with the name a report shows: a file as given, a
    folder's images as the folder as given joined with the file name.

    Raises:
        UsageError: a path does not exist, a file is not a .png/.jpg/.jpeg, a folder holds no
            image, or no paths were given.
    """
    if not paths:
        raise UsageError("no query images: give image files or folders of them")
    found: list[tuple[str, Path]] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise UsageError(f"query path {given} does not exist: give image files or folders")
        if path.is_dir():
            images = [p for p in _visible(path) if p.is_file() and is_image_name(p)]
            if not images:
                raise UsageError(f"query folder {given} holds no {_KINDS} images")
            found += [(os.path.join(str(given), p.name), p) for p in images]
        elif is_image_name(path):
            found.append((str(given), path))
        else:
            raise UsageError(f"query file {given} is not a {_KINDS} image: give PNG or JPEG files")
    return found


def read_image(path: Path | str) -> Image.Image:
    """The decoded image at ``path`` (fully read, the file closed).

    Raises:
        UsageError: the file cannot be read or is not a decodable image, naming it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except PermissionError:
        raise UsageError(f"cannot read {path} (permission denied): give yourself access") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        why = str(e).replace(f" '{path}'", "").splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(
            f"{path} is not a readable image ({why}): replace it with a PNG or JPEG, or remove it"
        ) from None
