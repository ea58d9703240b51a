"""A user's folders: classes in sorted order, query folders flat, hidden files skipped."""

from __future__ import annotations

import pytest
from PIL import Image

from metagrad.data.image_folders import query_files, read_image, support_classes
from metagrad.errors import UsageError


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 255).save(path, format="PNG")
    return path


def test_support_classes_are_sorted_folders_of_images_hidden_files_skipped(tmp_path):
    for rel in ("b/2.png", "b/1.JPG", "a/x.jpeg", ".git/config.png"):
        image(tmp_path / rel)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0")
    classes = support_classes(tmp_path)
    assert list(classes) == ["a", "b"]
    assert [p.name for p in classes["b"]] == ["1.JPG", "2.png"]
    assert [p.name for p in classes["a"]] == ["x.jpeg"]


def test_query_folders_are_flat_sorted_and_shown_as_given(tmp_path):
    for rel in ("q/b.png", "q/a.jpg", "q/.hidden.png", "q/sub/deep.png", "one.png"):
        image(tmp_path / rel)
    (tmp_path / "q" / "notes.txt").write_text("not an image: a query folder skips it")
    found = query_files([f"{tmp_path}/q", f"{tmp_path}/one.png"])
    shown = [s for s, _ in found]
    assert shown == [f"{tmp_path}/q/a.jpg", f"{tmp_path}/q/b.png", f"{tmp_path}/one.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="query folder .*empty holds no .png/.jpg/.jpeg images"):
        query_files([tmp_path / "empty"])
    with pytest.raises(UsageError, match="no query images"):
        query_files([])


def test_read_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UsageError, match=f"{bad} is not a readable image"):
        read_image(bad)
    assert read_image(image(tmp_path / "ok.png")).size == (8, 8)
