"""Omniglot readers: official zips, folders and npz arrays agree; preprocessing; cache; errors."""

from __future__ import annotations

import functools
import hashlib
import io
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metagrad.data.omniglot as omniglot
from metagrad.data.download import ChecksumError
from metagrad.data.omniglot import (
    ALPHABETS,
    alphabet_of,
    load_omniglot,
    preprocess,
    read_omniglot_folder,
    read_omniglot_npz,
    read_omniglot_zip,
)

SHARED = (Path(__file__).parents[2] / ".." / "shared" / "data" / "omniglot").resolve()
needs_data = pytest.mark.skipif(
    not (SHARED / "images_background.npz").is_file(), reason=f"no Omniglot data at {SHARED}"
)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole set from the shared npz files, preprocessed once per session (disk cache)."""
    if not (SHARED / "images_evaluation.npz").is_file():
        pytest.skip(f"no Omniglot data at {SHARED}")
    cache = tmp_path_factory.getbasetemp() / "omniglot-cache"
    start = time.perf_counter()
    data = load_omniglot(SHARED, cache_dir=cache)
    print(f"load_omniglot(full, 28px): {time.perf_counter() - start:.2f} s")
    return data


def _png(paper: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(paper).convert("1").save(buf, format="PNG")  # mode "1", as the official
    return buf.getvalue()


def _official_zip(path: Path, top: str, chars: dict[int, np.ndarray]) -> None:
    """Write ``chars`` (id -> bool [drawings, H, W], True = paper) in the official layout."""
    with zipfile.ZipFile(path, "w") as z:
        for char_id, drawings in chars.items():
            alphabet = alphabet_of(char_id)
            first = next(a for name, a, _ in ALPHABETS if name == alphabet)
            folder = f"{top}/{alphabet}/character{char_id - first + 1:02d}"
            for j, paper in enumerate(drawings):
                z.writestr(f"{folder}/{char_id:04d}_{j + 1:02d}.png", _png(paper))


def _random_paper(rng, n_chars: int, drawings: int = 20, side: int = 105) -> np.ndarray:
    return rng.random((n_chars, drawings, side, side)) > 0.1  # mostly paper, like Omniglot


def test_alphabet_table_covers_all_ids_in_order():
    ids = [i for _, a, b in ALPHABETS for i in range(a, b + 1)]
    assert ids == list(range(1, 1624))
    assert len(ALPHABETS) == 50
    assert alphabet_of(1) == "Arcadian" and alphabet_of(1201) == "Gurmukhi"
    with pytest.raises(ValueError, match="1 to 1623"):
        alphabet_of(1624)


def test_preprocess_inverts_resizes_and_quantises():
    paper = np.ones((105, 105), bool)
    paper[40:65, 10:95] = False  # a thick ink bar
    out = preprocess(paper, 28)
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    assert out[14, 14] == 255 and out[0, 0] == 0 and out[27, 27] == 0  # ink = 255, paper = 0
    assert preprocess(paper, 105).tolist() == np.where(paper, 0, 255).tolist()  # no resize
    box = preprocess(paper, 28, "box")
    assert 0 < box[10, 14] < 255 or 0 < box[17, 14] < 255  # area-averaged edge
    with pytest.raises(ValueError, match="lanczos"):
        preprocess(paper, 28, "bicubic")


def test_synthetic_zip_folder_and_npz_agree(tmp_path):
    rng = np.random.default_rng(0)
    paper = _random_paper(rng, 3, drawings=4, side=21)
    ids = [965, 966, 967]  # evaluation half: row i is id i + 965
    np.savez(tmp_path / "images_evaluation.npz", images=paper, labels=np.zeros((3, 4), int))
    _official_zip(tmp_path / "e.zip", "images_evaluation", dict(zip(ids, paper, strict=True)))
    from_npz = read_omniglot_npz(tmp_path / "images_evaluation.npz", 7)
    from_zip = read_omniglot_zip(tmp_path / "e.zip", 7)
    zipfile.ZipFile(tmp_path / "e.zip").extractall(tmp_path / "x")
    from_dir = omniglot.read_omniglot_folder(tmp_path / "x" / "images_evaluation", 7)
    for data in (from_npz, from_zip, from_dir):
        assert data.char_ids.tolist() == ids
        assert data.alphabets == ("Angelic",) * 3
        np.testing.assert_array_equal(data.images, preprocess(paper, 7))


def test_incomplete_character_is_reported(tmp_path):
    rng = np.random.default_rng(1)
    paper = _random_paper(rng, 2, drawings=3, side=10)
    _official_zip(tmp_path / "a.zip", "images_background", {1: paper[0], 2: paper[1][:2]})
    with pytest.raises(ValueError, match="character 0002"):
        read_omniglot_zip(tmp_path / "a.zip")


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_a_damaged_png_is_named_with_the_fix(tmp_path, layout):
    rng = np.random.default_rng(1)
    paper = _random_paper(rng, 2, drawings=3, side=10)
    _official_zip(tmp_path / "good.zip", "images_background", {1: paper[0], 2: paper[1]})
    with zipfile.ZipFile(tmp_path / "good.zip") as z:
        files = {n: z.read(n) for n in z.namelist()}
    damaged = sorted(n for n in files if n.endswith(".png"))[4]
    files[damaged] = files[damaged][:30]  # cut short, as an interrupted copy leaves it
    if layout == "zip":
        with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
        read = lambda: read_omniglot_zip(tmp_path / "bad.zip")
    else:
        for n, data in files.items():
            (tmp_path / "bad" / n).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "bad" / n).write_bytes(data)
        read = lambda: read_omniglot_folder(tmp_path / "bad")
    with pytest.raises(ValueError, match="cannot decode .*the file is damaged") as info:
        read()
    assert damaged.split("/", 1)[-1] in str(info.value)
    assert "metagrad data download omniglot" in str(info.value)


@needs_data
def test_official_small_zip_equals_npz_rows(full):
    small = read_omniglot_zip(SHARED / "images_background_small1.zip")
    assert len(small) == 136 and small.images.shape == (136, 20, 28, 28)
    assert set(small.alphabets) == {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"}
    # folder names in the zip agree with the id table the npz reader uses
    assert small.alphabets == tuple(alphabet_of(int(i)) for i in small.char_ids)
    same = full.select(small.char_ids)
    np.testing.assert_array_equal(same.images, small.images)
    assert same.alphabets == small.alphabets
    other = full.select(small.char_ids + 1)  # shifted ids: must not match (test can fail)
    assert not np.array_equal(other.images, small.images)


@needs_data
def test_full_set_layout(full):
    assert full.images.shape == (1623, 20, 28, 28) and full.images.dtype == np.uint8
    assert full.char_ids.tolist() == list(range(1, 1624))
    assert full.alphabets[0] == "Arcadian" and full.alphabets[-1] == "ULOG"
    assert full.images.mean() < 0.25 * 255  # ink (255) is the minority: inversion done
    assert (full.images[:, :, 0, 0] == 0).mean() > 0.99  # corners are (almost always) paper


@needs_data
def test_extracted_folder_layout_is_found(tmp_path, full):
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(SHARED / "images_background_small2.zip") as z:
        z.extractall(tmp_path / "x")
    (tmp_path / "x" / "images_background_small2").rename(root / "images_background")
    data = load_omniglot(root, sets=("background",), cache_dir=tmp_path / "cache")
    assert len(data) == 156 and "Tagalog" in data.alphabets
    np.testing.assert_array_equal(full.select(data.char_ids).images, data.images)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_true_fetches_and_reads_the_official_zip(tmp_path, monkeypatch):
    serve = tmp_path / "serve"
    serve.mkdir()
    paper = _random_paper(np.random.default_rng(3), 2, drawings=3, side=15)
    _official_zip(serve / "images_background.zip", "images_background", {1: paper[0], 2: paper[1]})
    md5 = hashlib.md5((serve / "images_background.zip").read_bytes()).hexdigest()
    handler = functools.partial(_QuietHandler, directory=str(serve))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/images_background.zip"
        monkeypatch.setitem(omniglot.OMNIGLOT_ZIPS, "background", (url, md5))
        root = tmp_path / "fresh"
        got = load_omniglot(root, 5, download=True, sets=("background",), cache_dir=tmp_path / "c")
        # a checksum that does not match is refused, and nothing is left under the final name
        monkeypatch.setitem(omniglot.OMNIGLOT_ZIPS, "evaluation", (url, "f" * 32))
        with pytest.raises(ChecksumError, match="checksum mismatch"):
            load_omniglot(root, download=True, sets=("evaluation",))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip"]
    assert got.char_ids.tolist() == [1, 2] and got.alphabets == ("Arcadian", "Arcadian")
    np.testing.assert_array_equal(got.images, preprocess(paper, 5))


def test_cache_is_keyed_by_size_and_source_and_written_atomically(tmp_path):
    rng = np.random.default_rng(2)
    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    np.savez(root / "images_background.npz", images=_random_paper(rng, 2, 3, 12))
    a = load_omniglot(root, 6, sets=("background",), cache_dir=cache)
    b = load_omniglot(root, 4, sets=("background",), cache_dir=cache)
    assert a.images.shape[-1] == 6 and b.images.shape[-1] == 4
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2  # one per size, and no temporary files left behind
    assert files[0].startswith("omniglot-background-npz-4px-lanczos-") and files[0].endswith(".npz")
    assert files[1].startswith("omniglot-background-npz-6px-lanczos-")
    again = load_omniglot(root, 6, sets=("background",), cache_dir=cache)
    np.testing.assert_array_equal(again.images, a.images)

    new_paper = ~_random_paper(rng, 2, 3, 12)  # the source changes: the cache must follow
    np.savez(root / "images_background.npz", images=new_paper)
    changed = load_omniglot(root, 6, sets=("background",), cache_dir=cache)
    np.testing.assert_array_equal(changed.images, preprocess(new_paper, 6))
    assert not np.array_equal(changed.images, a.images)


def test_read_only_root_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    np.savez(
        root / "images_evaluation.npz", images=_random_paper(np.random.default_rng(4), 2, 2, 9)
    )
    (root / "metagrad_cache").write_text("not a folder")  # the root cache cannot be created
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = load_omniglot(root, 5, sets=("evaluation",))
    assert first.char_ids.tolist() == [965, 966]
    assert len(list((tmp_path / "xdg" / "metagrad" / "omniglot").glob("omniglot-*.npz"))) == 1
    np.testing.assert_array_equal(load_omniglot(root, 5, sets=("evaluation",)).images, first.images)


def test_nothing_found_error_teaches_both_fixes(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot(tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty" / "images_background.zip") in message
    assert f"metagrad data download omniglot --root {tmp_path / 'empty'}" in message
    assert "background and evaluation" in message
    with pytest.raises(ValueError, match="sets must be"):
        load_omniglot(tmp_path, sets=("training",))
