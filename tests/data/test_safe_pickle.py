"""The restricted unpickler: plain data loads, anything naming code is refused and never runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from metagrad.data.safe_pickle import load_pickle
from metagrad.errors import UsageError


class _Hostile:
    """Unpickling this calls os.system: with pickle.load it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_round_trips(tmp_path, protocol):
    data = {
        "image_data": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
        "labels": np.array([1, 2], dtype=np.int64),
        "class_dict": {"n01532829": [0, 1]},
        "misc": [1, 2.5, "x", b"\x00\xff", (3, 4), np.float32(1.5), np.int64(7)],
    }
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    got = load_pickle(path)
    np.testing.assert_array_equal(got["image_data"], data["image_data"])
    assert got["image_data"].dtype == np.uint8
    assert got["class_dict"] == data["class_dict"]
    assert got["misc"] == data["misc"]


def test_python2_pickle_with_bytes_keys_reads_with_latin1(tmp_path):
    # What Python 2 wrote: str keys (bytes to Python 3) and a numpy array, protocol 2.
    path = tmp_path / "py2.pkl"
    arr = np.arange(6, dtype=np.uint8)
    path.write_bytes(pickle.dumps({b"label_specific": arr, b"names": [b"a", b"b"]}, protocol=2))
    got = load_pickle(path, encoding="latin1")
    np.testing.assert_array_equal(got[b"label_specific"], arr)
    assert got[b"names"] == [b"a", b"b"]


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_hostile_pickle_runs_nothing_and_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"image_data": _Hostile(marker)}, protocol=protocol))
    with pytest.raises(UsageError) as e:
        load_pickle(path)
    assert not marker.exists()
    msg = str(e.value)
    assert "\n" not in msg and "refused" in msg and "system" in msg and str(path) in msg


def test_other_globals_are_refused(tmp_path):
    # A class of this module (an object, not data) and builtins.eval are refused alike.
    for payload in (
        pickle.dumps(_Hostile("x"), protocol=0).replace(b"posix\nsystem", b"builtins\neval"),
        b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'x'\ntR.",
        pickle.dumps({"a": _Hostile}),  # a class itself, even uncalled
    ):
        (tmp_path / "p.pkl").write_bytes(payload)
        with pytest.raises(UsageError, match="refused"):
            load_pickle(tmp_path / "p.pkl")


def test_codecs_encode_only_for_text_codecs(tmp_path):
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlibq\x00\x86R."
    (tmp_path / "z.pkl").write_bytes(payload)
    with pytest.raises(UsageError, match="not a complete pickle|zlib"):
        load_pickle(tmp_path / "z.pkl")


@pytest.mark.parametrize("cut", [1, 10, 100])
def test_truncated_pickle_is_one_clear_line(tmp_path, cut):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps({"image_data": np.zeros((4, 8, 8, 3), np.uint8)})[:-cut])
    with pytest.raises(UsageError) as e:
        load_pickle(path)
    assert "\n" not in str(e.value) and "truncated" in str(e.value) and str(path) in str(e.value)


def test_missing_and_non_pickle_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_pickle(tmp_path / "absent.pkl")
    (tmp_path / "text.pkl").write_text("hello, not a pickle")
    with pytest.raises(UsageError, match="not a complete pickle"):
        load_pickle(tmp_path / "text.pkl")
