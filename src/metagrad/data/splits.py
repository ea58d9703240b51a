"""Omniglot class splits (which characters are for meta-training, validation and testing).

Three conventions, selected by name (all in official character ids 1..1623):

- ``"maml"``: the MAML paper's protocol: all 1623 characters shuffled with a fixed seed, then
  1100 train / 100 val / 423 test. (The reference code shuffled a directory listing, whose
  order is file-system dependent, so its exact split cannot be reproduced; this one is fixed.)
- ``"official"``: background alphabets (964 characters) for train and validation, evaluation
  alphabets (659) for test; validation is carved out of the background by alphabet, using the
  five Vinyals validation alphabets: 792 / 172 / 659.
- ``"vinyals"``: Vinyals et al. (2016), as in torchmeta / learn2learn: 1028 / 172 / 423.

Each character can also be used rotated by 90, 180 and 270 degrees as new classes, configured
per part; see :class:`ClassSet`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from metagrad.data.omniglot import ALPHABETS, OmniglotData

__all__ = [
    "DEFAULT_ROTATIONS",
    "MAML_SPLIT_SEED",
    "PARTS",
    "SPLITS",
    "VINYALS_TEST_ALPHABETS",
    "VINYALS_VAL_ALPHABETS",
    "ClassSet",
    "omniglot_split",
    "split_char_ids",
]

SPLITS = ("maml", "official", "vinyals")
PARTS = ("train", "val", "test")
MAML_SPLIT_SEED = 1
NUM_CHARACTERS = 1623
NUM_BACKGROUND = 964

VINYALS_VAL_ALPHABETS = (
    "Armenian",
    "Bengali",
    "Early_Aramaic",
    "Hebrew",
    "Mkhedruli_(Georgian)",
)
VINYALS_TEST_ALPHABETS = (
    "Kannada",
    "Keble",
    "Malayalam",
    "Manipuri",
    "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)",
    "Oriya",
    "Sylheti",
    "Syriac_(Serto)",
    "Tengwar",
    "Tibetan",
    "ULOG",
)
_GURMUKHI_TEST = range(42, 46)  # Gurmukhi characters 42-45 are Vinyals test characters

DEFAULT_ROTATIONS: dict[str, tuple[int, ...]] = {
    "train": (0, 90, 180, 270),
    "val": (0,),
    "test": (0,),
}
"""Rotation augmentation per part: meta-training classes x 4, evaluation on plain characters."""


def _ids_of(alphabets: Sequence[str]) -> np.ndarray:
    ranges = {name: (first, last) for name, first, last in ALPHABETS}
    unknown = [a for a in alphabets if a not in ranges]
    if unknown:
        raise ValueError(f"unknown Omniglot alphabets {unknown}; known: {sorted(ranges)}")
    return np.concatenate([np.arange(ranges[a][0], ranges[a][1] + 1) for a in alphabets])


def split_char_ids(name: str, seed: int = MAML_SPLIT_SEED) -> dict[str, np.ndarray]:
    """Official character ids of each part of a named split.

    Args:
        name: One of :data:`SPLITS`.
        seed: Shuffling seed of the ``"maml"`` split (ignored by the others).

    Returns:
        ``{"train": ids, "val": ids, "test": ids}``, each a sorted int64 array; the parts are
        disjoint and together hold all 1623 characters.
    """
    all_ids = np.arange(1, NUM_CHARACTERS + 1, dtype=np.int64)
    if name == "maml":
        shuffled = np.random.default_rng(seed).permutation(all_ids)
        parts = (shuffled[:1100], shuffled[1100:1200], shuffled[1200:])
    elif name == "official":
        val = _ids_of(VINYALS_VAL_ALPHABETS)
        train = np.setdiff1d(all_ids[:NUM_BACKGROUND], val)
        parts = (train, val, all_ids[NUM_BACKGROUND:])
    elif name == "vinyals":
        gurmukhi_first = _ids_of(["Gurmukhi"])[0]
        test = np.concatenate(
            [gurmukhi_first - 1 + np.asarray(_GURMUKHI_TEST), _ids_of(VINYALS_TEST_ALPHABETS)]
        )
        val = _ids_of(VINYALS_VAL_ALPHABETS)
        parts = (np.setdiff1d(all_ids, np.concatenate([val, test])), val, test)
    else:
        raise ValueError(f"unknown Omniglot split {name!r}; choose one of {SPLITS}")
    return {part: np.sort(ids).astype(np.int64) for part, ids in zip(PARTS, parts, strict=True)}


@dataclass(frozen=True, eq=False, repr=False)
class ClassSet:
    """The classes of one part of a split: characters, each optionally in several rotations.

    Class ``g`` is character ``char_ids[g // R]`` rotated by ``rotations[g % R]`` degrees
    counter-clockwise (``R = len(rotations)``), exactly the convention of
    :class:`metagrad.tasks.episodes.EpisodeSampler`, which rotates lazily:
    ``EpisodeSampler(cs.images, ways, shots, queries, rotations=cs.rotations)``.

    Attributes:
        images: ``[chars, 20, H, W]`` uint8 (ink = 255), unrotated.
        char_ids: ``[chars]`` official character ids.
        alphabets: Alphabet of every character.
        rotations: Degrees out of ``(0, 90, 180, 270)``.
    """

    images: np.ndarray
    char_ids: np.ndarray
    alphabets: tuple[str, ...]
    rotations: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        r = self.rotations
        if not r or len(set(r)) != len(r) or not set(r) <= {0, 90, 180, 270}:
            raise ValueError(f"rotations must be distinct degrees out of 0/90/180/270, got {r}")
        if len(self.images) != len(self.char_ids):
            raise ValueError(f"{len(self.images)} image rows but {len(self.char_ids)} char_ids")

    def __repr__(self) -> str:
        return f"ClassSet({len(self.char_ids)} chars x rotations {self.rotations})"

    @property
    def num_classes(self) -> int:
        """Number of distinct classes: characters x rotations."""
        return len(self.char_ids) * len(self.rotations)

    def describe(self, label: int) -> tuple[int, str, int]:
        """``(char_id, alphabet, degrees)`` of class ``label``."""
        if not 0 <= label < self.num_classes:
            raise IndexError(f"class {label} out of range: this set has {self.num_classes}")
        char, turn = divmod(label, len(self.rotations))
        return int(self.char_ids[char]), self.alphabets[char], self.rotations[turn]

    def materialize(self) -> np.ndarray:
        """Precomputed ``[num_classes, 20, H, W]`` uint8 array of all (rotated) classes, in the
        order above (the eager twin of the sampler's lazy rotation; tested equal to it)."""
        turns = [np.rot90(self.images, d // 90, axes=(2, 3)) for d in self.rotations]
        return np.stack(turns, axis=1).reshape(-1, *self.images.shape[1:])  # [chars * R, ...]


def omniglot_split(
    data: OmniglotData,
    name: str = "vinyals",
    *,
    rotations: Mapping[str, Sequence[int]] | None = None,
    seed: int = MAML_SPLIT_SEED,
) -> dict[str, ClassSet]:
    """Split loaded Omniglot data into train / val / test class sets.

    Args:
        data: From :func:`metagrad.data.load_omniglot`, holding at least the split's characters
            (the full set for all three named splits).
        name: One of :data:`SPLITS`.
        rotations: Degrees per part, merged over :data:`DEFAULT_ROTATIONS`, e.g.
            ``{"train": (0,)}`` turns rotation augmentation off for training.
        seed: Shuffling seed of the ``"maml"`` split.

    Returns:
        ``{"train": ClassSet, "val": ClassSet, "test": ClassSet}``.
    """
    config = dict(DEFAULT_ROTATIONS)
    for part, degrees in (rotations or {}).items():
        if part not in PARTS:
            raise ValueError(f"rotations has key {part!r}; the parts are {PARTS}")
        config[part] = tuple(int(d) for d in degrees)
    out = {}
    for part, ids in split_char_ids(name, seed).items():
        chosen = data.select(ids)
        out[part] = ClassSet(chosen.images, chosen.char_ids, chosen.alphabets, config[part])
    return out
