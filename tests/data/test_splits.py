"""Omniglot class splits: sizes, disjointness, conventions, and rotation classes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from metagrad.data.omniglot import ALPHABETS, OmniglotData, alphabet_of
from metagrad.data.splits import (
    SPLITS,
    VINYALS_TEST_ALPHABETS,
    VINYALS_VAL_ALPHABETS,
    ClassSet,
    omniglot_split,
    split_char_ids,
)

SIZES = {
    "maml": (1100, 100, 423),
    "official": (792, 172, 659),
    "vinyals": (1028, 172, 423),
}


def _ids(alphabet: str) -> set[int]:
    first, last = next((a, b) for name, a, b in ALPHABETS if name == alphabet)
    return set(range(first, last + 1))


@pytest.fixture(scope="module")
def fake_data() -> OmniglotData:
    """All 1623 characters, 3 drawings of 6x6, each image encodes (char id, drawing)."""
    ids = np.arange(1, 1624)
    images = np.zeros((1623, 3, 6, 6), np.uint8)
    images[:, :, 0, 0] = (ids % 256)[:, None]
    images[:, :, 0, 1] = (ids // 256)[:, None]
    images[:, :, 5, 5] = np.arange(3)  # drawing index, in the bottom-right corner
    return OmniglotData(images, ids, tuple(alphabet_of(int(i)) for i in ids), "fake")


@pytest.mark.parametrize("name", SPLITS)
def test_sizes_disjoint_and_complete(name):
    parts = split_char_ids(name)
    assert tuple(len(parts[p]) for p in ("train", "val", "test")) == SIZES[name]
    sets = [set(parts[p].tolist()) for p in ("train", "val", "test")]
    assert all(len(s) == len(parts[p]) for s, p in zip(sets, parts, strict=True))  # no dups
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set.union(*sets) == set(range(1, 1624))
    again = split_char_ids(name)
    assert all(np.array_equal(parts[p], again[p]) for p in parts)  # deterministic


def test_maml_split_is_a_seeded_shuffle():
    a, b = split_char_ids("maml"), split_char_ids("maml", seed=2)
    # pinned: if a numpy release ever changed the shuffle, published numbers would silently
    # move to another split; this catches it
    assert a["val"][:6].tolist() == [7, 19, 30, 46, 53, 82]
    digest = hashlib.sha256(a["test"].astype("<i8").tobytes()).hexdigest()[:16]
    assert digest == "201dc88d09e50c75"
    assert not np.array_equal(a["test"], b["test"])
    # shuffled over all 1623: the test part mixes background and evaluation characters
    assert (a["test"] <= 964).any() and (a["test"] > 964).any()


def test_official_split_uses_whole_alphabets():
    parts = split_char_ids("official")
    assert set(parts["test"].tolist()) == set(range(965, 1624))
    val = set(parts["val"].tolist())
    assert val == set().union(*(_ids(a) for a in VINYALS_VAL_ALPHABETS))
    assert set(parts["train"].tolist()) | val == set(range(1, 965))
    for name, _, _ in ALPHABETS:  # every alphabet lives in exactly one part
        homes = [p for p in parts if _ids(name) & set(parts[p].tolist())]
        assert len(homes) == 1, name


def test_vinyals_split_matches_the_published_convention():
    parts = split_char_ids("vinyals")
    test, train = set(parts["test"].tolist()), set(parts["train"].tolist())
    gurmukhi = sorted(_ids("Gurmukhi"))
    assert set(gurmukhi[41:45]) <= test  # Gurmukhi characters 42-45
    assert set(gurmukhi[:41]) <= train  # Gurmukhi characters 1-41
    for alphabet in VINYALS_TEST_ALPHABETS:
        assert _ids(alphabet) <= test
    for alphabet in ("Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta"):
        assert _ids(alphabet) <= train
    assert set(parts["val"].tolist()) == set().union(*(_ids(a) for a in VINYALS_VAL_ALPHABETS))


def test_unknown_split_name_lists_the_choices():
    with pytest.raises(ValueError, match="vinyals"):
        split_char_ids("lake")


def test_omniglot_split_selects_the_right_rows_and_rotations(fake_data):
    sets = omniglot_split(fake_data, "vinyals")
    ids = split_char_ids("vinyals")
    for part, cs in sets.items():
        assert cs.char_ids.tolist() == ids[part].tolist()
        decoded = cs.images[:, 0, 0, 0].astype(int) + 256 * cs.images[:, 0, 0, 1].astype(int)
        assert decoded.tolist() == ids[part].tolist()  # images follow their ids
    assert sets["train"].rotations == (0, 90, 180, 270)
    assert sets["train"].num_classes == 4 * 1028
    assert sets["test"].rotations == (0,) and sets["test"].num_classes == 423
    custom = omniglot_split(fake_data, "maml", rotations={"train": (0,), "test": (0, 180)})
    assert custom["train"].num_classes == 1100 and custom["test"].num_classes == 846
    with pytest.raises(ValueError, match="parts"):
        omniglot_split(fake_data, "maml", rotations={"training": (0,)})


def test_rotated_classes_are_distinct_and_rotated_correctly(fake_data):
    cs = omniglot_split(fake_data, "official")["train"]
    classes = cs.materialize()  # [chars * 4, drawings, H, W]
    assert classes.shape == (4 * len(cs.char_ids), 3, 6, 6)
    for label in (0, 1, 2, 3, 4 * 17 + 2):
        char_id, alphabet, degrees = cs.describe(label)
        row = label // 4
        assert char_id == cs.char_ids[row] and alphabet == cs.alphabets[row]
        assert degrees == (0, 90, 180, 270)[label % 4]
        np.testing.assert_array_equal(
            classes[label], np.rot90(cs.images[row], degrees // 90, axes=(1, 2))
        )
    # a rotated class differs from its unrotated source: it is a different class
    for k in (1, 2, 3):
        assert not np.array_equal(classes[k], classes[0])
    with pytest.raises(IndexError):
        cs.describe(cs.num_classes)
    with pytest.raises(ValueError, match="0/90/180/270"):
        ClassSet(cs.images, cs.char_ids, cs.alphabets, (0, 45))


def test_split_of_partial_data_says_what_is_missing(fake_data):
    background = fake_data.select(np.arange(1, 965))
    with pytest.raises(KeyError, match="evaluation"):
        omniglot_split(background, "official")
