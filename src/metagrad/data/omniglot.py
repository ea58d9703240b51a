"""Omniglot (Lake et al., 2015) from the layouts users download, preprocessed once and cached.

Readable layouts, per half (``background`` = character ids 0001-0964, ``evaluation`` =
0965-1623), looked for directly under the data root:

- ``images_<half>.npz``: bool ``images`` ``[chars, 20, 105, 105]`` (True = paper), row ``i`` =
  official id ``i + 1`` (background) or ``i + 965`` (evaluation); 0/1 or 0/255 integers are
  read too, the value covering most pixels being paper (see :func:`paper_convention`);
- ``images_<half>/`` folder or ``images_<half>.zip`` (the official release):
  ``Alphabet/characterNN/XXXX_YY.png`` with ``XXXX`` the official character id.

Preprocessing: invert so ink = 1, resize ``105 -> image_size`` with a Pillow filter on the float
image, clip to ``[0, 1]`` and store as ``uint8`` (ink = 255). The result is cached as ``.npz``
in ``<root>/metagrad_cache`` (keyed by half, size, filter and source file; written atomically),
or in ``~/.cache/metagrad/omniglot`` when the data root is read-only.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from metagrad.data.alphabets import ALPHABETS, alphabet_of
from metagrad.data.cache import read_through
from metagrad.data.download import download as _download
from metagrad.data.drawings import paper_convention, preprocess
from metagrad.errors import UsageError

__all__ = [
    "ALPHABETS",
    "OMNIGLOT_ZIPS",
    "OmniglotData",
    "alphabet_of",
    "download_omniglot",
    "load_omniglot",
    "preprocess",
    "read_omniglot_folder",
    "read_omniglot_npz",
    "read_omniglot_zip",
]

_BASE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
OMNIGLOT_ZIPS: dict[str, tuple[str, str]] = {
    "background": (_BASE + "images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"),
    "evaluation": (_BASE + "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"),
}
"""Official zip per half: ``(url, md5)``."""

_FIRST_ID = {"background": 1, "evaluation": 965}
_CACHE_VERSION = 1
_PNG = re.compile(r"(?:^|/)([^/]+)/character(\d+)/(\d{4})_(\d{2})\.png$")


@dataclass(frozen=True, eq=False, repr=False)
class OmniglotData:
    """Preprocessed Omniglot characters, ordered by official character id.

    Attributes:
        images: ``[chars, 20, size, size]`` uint8, ink = 255 and paper = 0.
        char_ids: ``[chars]`` int64 official character ids (1..1623); the loaders sort by id.
        alphabets: Alphabet folder name of every character (e.g. ``"Early_Aramaic"``).
        source: Where the data was read from (for messages and provenance).
    """

    images: np.ndarray
    char_ids: np.ndarray
    alphabets: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"OmniglotData.images must be uint8 [chars, drawings, H, W], got "
                f"{self.images.dtype} {self.images.shape}"
            )
        if not (len(self.images) == len(self.char_ids) == len(self.alphabets)):
            raise ValueError(
                f"{len(self.images)} image rows, {len(self.char_ids)} char_ids and "
                f"{len(self.alphabets)} alphabets: each character needs one of each"
            )
        if len(np.unique(self.char_ids)) != len(self.char_ids):
            raise ValueError("OmniglotData.char_ids has duplicates; each character must be once")

    def __len__(self) -> int:
        return len(self.char_ids)

    def __repr__(self) -> str:
        return f"OmniglotData({len(self)} chars, images {list(self.images.shape)}, {self.source})"

    def select(self, char_ids: Sequence[int] | np.ndarray) -> OmniglotData:
        """The characters with the given official ids, in the given order."""
        row_of = {int(c): i for i, c in enumerate(self.char_ids)}
        wanted = [int(c) for c in np.asarray(char_ids).reshape(-1)]
        missing = [c for c in wanted if c not in row_of]
        if missing:
            raise MissingCharacters(self._missing_message(missing))
        rows = np.asarray([row_of[c] for c in wanted], dtype=np.int64)
        alphabets = tuple(self.alphabets[r] for r in rows)
        return OmniglotData(self.images[rows], self.char_ids[rows], alphabets, self.source)

    def _missing_message(self, missing: list[int]) -> str:
        # A half that was not loaded at all wants the other half; a half with gaps is a
        # damaged or partial copy (advising "load both halves" there sent users astray).
        loaded = {_half_of(int(c)) for c in self.char_ids}
        absent = sorted({_half_of(c) for c in missing} - loaded)
        head = (
            f"{len(missing)} characters the split needs are missing (e.g. ids {missing[:5]}, "
            f"{alphabet_of(missing[0])}) from {self.source}, which holds {len(self)}"
        )
        if absent:
            return (
                f"{head}: the {' and '.join(absent)} half is not loaded; load both halves "
                "(images_background and images_evaluation under the data root)"
            )
        return (
            f"{head}: the data is incomplete; replace it with the official files "
            "(metagrad data download omniglot --root DIR into an empty folder) and delete "
            "the partial copy"
        )


class MissingCharacters(UsageError, KeyError):
    """Characters a split needs are not in the loaded data (the message says why and what to
    do). A KeyError for code that caught the old one; printed as one line by the CLI."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0])


def _half_of(char_id: int) -> str:
    return "background" if char_id < _FIRST_ID["evaluation"] else "evaluation"


def read_omniglot_npz(
    path: Path, image_size: int = 28, resample: str = "lanczos", first_id: int | None = None
) -> OmniglotData:
    """Read an ``images_<half>.npz`` array file (see the module docstring) and preprocess it.

    ``first_id`` is the official id of row 0; by default 1 for a file named ``*background*``
    and 965 for ``*evaluation*``.
    """
    path = Path(path)
    if first_id is None:
        half = next((h for h in _FIRST_ID if h in path.name), None)
        if half is None:
            raise ValueError(
                f"cannot tell which Omniglot half {path.name} holds; name it "
                "images_background.npz / images_evaluation.npz or pass first_id=1 or 965"
            )
        first_id = _FIRST_ID[half]
    try:
        with np.load(path) as arrays:
            paper = arrays["images"]  # [chars, 20, 105, 105] bool, True = paper
    except KeyError:
        raise UsageError(
            f"{path}: no array 'images' in it; expected images [chars, 20, 105, 105] "
            "(bool, True = paper)"
        ) from None
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(
            f"{path}: not a readable .npz ({type(e).__name__}: {e}); the file is damaged or "
            "truncated: write or download it again"
        ) from None
    if paper.ndim != 4:
        raise UsageError(f"{path}: expected images [chars, 20, H, W], got shape {paper.shape}")
    paper = paper_convention(paper, str(path))
    ids = np.arange(first_id, first_id + len(paper), dtype=np.int64)
    alphabets = tuple(alphabet_of(int(i)) for i in ids)
    return OmniglotData(preprocess(paper, image_size, resample), ids, alphabets, str(path))


def read_omniglot_zip(path: Path, image_size: int = 28, resample: str = "lanczos") -> OmniglotData:
    """Read an official zip (``.../Alphabet/characterNN/XXXX_YY.png``) and preprocess it."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:  # its message names no file
        raise UsageError(
            f"{path} is not a readable zip ({e}): the download is damaged or truncated; "
            "delete it and download it again (metagrad data download omniglot --root DIR)"
        ) from None
    with archive:
        names = [n for n in archive.namelist() if not n.startswith("__MACOSX/")]
        return _read_pngs(names, archive.read, image_size, resample, str(path))


def read_omniglot_folder(
    path: Path, image_size: int = 28, resample: str = "lanczos"
) -> OmniglotData:
    """Read an extracted official folder (``Alphabet/characterNN/XXXX_YY.png``)."""
    path = Path(path)
    names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.png"))
    return _read_pngs(names, lambda n: (path / n).read_bytes(), image_size, resample, str(path))


def _read_pngs(names, read, image_size: int, resample: str, source: str) -> OmniglotData:
    chars: dict[int, dict[int, str]] = {}
    alphabet: dict[int, str] = {}
    for name in names:
        match = _PNG.search(name)
        if match is None or Path(name).name.startswith("._"):
            continue
        char_id, drawing = int(match.group(3)), int(match.group(4))
        chars.setdefault(char_id, {})[drawing] = name
        alphabet[char_id] = match.group(1)
    if not chars:
        raise FileNotFoundError(
            f"no Omniglot drawings in {source}: expected files Alphabet/characterNN/XXXX_YY.png "
            "as in the official images_background.zip / images_evaluation.zip"
        )
    ids = sorted(chars)
    drawings = sorted(chars[ids[0]])
    for char_id in ids:
        if sorted(chars[char_id]) != drawings:
            raise UsageError(
                f"{source}: character {char_id:04d} has drawings {sorted(chars[char_id])}, "
                f"but character {ids[0]:04d} has {drawings}; the archive looks incomplete, "
                "download it again"
            )
    out = np.empty((len(ids), len(drawings), image_size, image_size), np.uint8)
    for row, char_id in enumerate(ids):
        for col, drawing in enumerate(drawings):
            out[row, col] = preprocess(
                _decode(read, chars[char_id][drawing], source), image_size, resample
            )
    return OmniglotData(out, np.asarray(ids, np.int64), tuple(alphabet[i] for i in ids), source)


def _decode(read, name: str, source: str) -> np.ndarray:
    """The drawing ``name`` as ``[H, W]`` booleans, True = paper; a damaged file is named."""
    try:
        with Image.open(io.BytesIO(read(name))) as img:
            return np.asarray(img.convert("L")) >= 128
    except (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile) as e:  # PIL, zip
        raise UsageError(
            f"{source}: cannot decode {name} ({type(e).__name__}: {e}); the file is damaged. "
            "Download the data again (metagrad data download omniglot --root DIR checks MD5s)."
        ) from e


def _find(root: Path, half: str) -> tuple[str, Path] | None:
    """The first existing layout of ``half`` under ``root``: npz, then folder, then zip."""
    for kind, ext in (("npz", ".npz"), ("folder", ""), ("zip", ".zip")):
        path = root / f"images_{half}{ext}"
        if path.is_dir() if kind == "folder" else path.is_file():
            return kind, path
    return None


_READERS = {"npz": read_omniglot_npz, "folder": read_omniglot_folder, "zip": read_omniglot_zip}


def download_omniglot(root: Path, sets: Iterable[str] = ("background", "evaluation")) -> list[Path]:
    """Download the official zips of ``sets`` into ``root`` (skipping halves already present).

    Returns:
        The paths of the zips it downloaded.
    """
    root = Path(root).expanduser()
    blocking = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(
            f"cannot download into {root}: {blocking} is a file, not a folder; give a folder "
            "path for --root (it is created if missing)"
        )
    paths = []
    for half in sets:
        if _find(root, half) is None:
            url, md5 = OMNIGLOT_ZIPS[half]
            paths.append(_download(url, root / f"images_{half}.zip", md5))
    return paths


def load_omniglot(
    root: Path | str,
    image_size: int = 28,
    download: bool = False,
    *,
    sets: Sequence[str] = ("background", "evaluation"),
    resample: str = "lanczos",
    cache_dir: Path | str | None = None,
) -> OmniglotData:
    """Load Omniglot from whatever official layout exists under ``root``, via the cache.

    Args:
        root: Data folder holding ``images_<half>.npz``, ``images_<half>/`` or
            ``images_<half>.zip`` for each half in ``sets``.
        image_size: Side length of the preprocessed images.
        download: Fetch the official zips of missing halves into ``root`` first.
        sets: Halves to load: ``"background"`` (ids 1-964) and/or ``"evaluation"`` (965-1623).
        resample: Resize filter, ``"lanczos"`` or ``"box"``.
        cache_dir: Where the preprocessed arrays are cached (default ``<root>/metagrad_cache``;
            if it cannot be written the data is used uncached, with a warning).

    Returns:
        The characters of all requested halves, ordered by official id.

    Raises:
        FileNotFoundError: A half was not found; the message lists where it looked and how to fix.
    """
    root = Path(root).expanduser()
    unknown = [s for s in sets if s not in _FIRST_ID]
    if unknown or not sets:
        raise ValueError(f"sets must be a non-empty subset of {tuple(_FIRST_ID)}, got {sets}")
    if download:
        download_omniglot(root, [s for s in sets if _find(root, s) is None])
    found = {half: _find(root, half) for half in sets}
    missing = [half for half, hit in found.items() if hit is None]
    if missing:
        looked = ", ".join(
            str(root / f"images_{h}{ext}") for h in missing for ext in (".npz", "", ".zip")
        )
        raise FileNotFoundError(
            f"Omniglot {' and '.join(missing)} not found under {root} (looked for {looked}). "
            f"Fix: run `metagrad data download omniglot --root {root}` (or pass download=True), "
            "or put the official images_background.zip / images_evaluation.zip (or their "
            f"extracted folders, or images_<half>.npz arrays) directly in {root}."
        )
    if cache_dir is not None:
        caches = [Path(cache_dir).expanduser()]
    else:  # under the data root, or the user's cache folder when the root is read-only
        user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        caches = [root / "metagrad_cache", user / "metagrad" / "omniglot"]
    parts = [_cached(*found[h], h, image_size, resample, caches) for h in sets]
    images = np.concatenate([p.images for p in parts])
    ids = np.concatenate([p.char_ids for p in parts])
    order = np.argsort(ids, kind="stable")
    every = sum((p.alphabets for p in parts), ())
    alphabets = tuple(every[i] for i in order)
    return OmniglotData(images[order], ids[order], alphabets, " + ".join(p.source for p in parts))


def _cached(
    kind: str, path: Path, half: str, image_size: int, resample: str, caches: list[Path]
) -> OmniglotData:
    """Read ``path`` through the first cache folder holding a valid copy, else build one."""
    stat, source = path.stat(), str(path.resolve())
    meta = dict(
        version=_CACHE_VERSION,
        source=source,
        source_bytes=stat.st_size,
        source_mtime_ns=stat.st_mtime_ns,
        image_size=image_size,
        resample=resample,
    )
    tag = hashlib.sha1(source.encode()).hexdigest()[:8]  # one cache file per source path
    name = f"omniglot-{half}-{kind}-{image_size}px-{resample}-{tag}.npz"

    def build() -> dict[str, np.ndarray]:
        data = _READERS[kind](path, image_size, resample)
        alphabets = np.asarray(data.alphabets)
        return dict(images=data.images, char_ids=data.char_ids, alphabets=alphabets)

    arrays = read_through(name, meta, build, caches)
    alphabets = tuple(arrays["alphabets"].tolist())
    return OmniglotData(arrays["images"], arrays["char_ids"], alphabets, str(path))
