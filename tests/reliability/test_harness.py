"""The catalogue's harness itself can fail: a traceback, two lines or a changed file are caught."""

from __future__ import annotations

import pytest


def test_expect_rejects_a_traceback_and_several_lines(cli):
    from reliability.catalogue import Outcome

    with pytest.raises(AssertionError):
        Outcome(2, "Traceback (most recent call last):\n  x\nValueError: y\n", "").expect(2)
    with pytest.raises(AssertionError):
        Outcome(2, "one\ntwo\n", "").expect(2)
    with pytest.raises(AssertionError):
        Outcome(1, "metagrad train: error: x\n", "").expect(2)
    Outcome(2, "metagrad train: error: bad x\n", "").expect(2, "bad")


def test_keep_sees_a_changed_and_a_lost_file(tmp_path, keep):
    (tmp_path / "a").write_text("1")
    (tmp_path / "b").write_text("2")
    with pytest.raises(AssertionError, match="changed"), keep(tmp_path):
        (tmp_path / "a").write_text("3")
    with pytest.raises(AssertionError, match="lost"), keep(tmp_path):
        (tmp_path / "b").unlink()
