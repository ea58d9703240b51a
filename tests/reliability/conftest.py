"""Fixtures of the reliability catalogue (see catalogue.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from metagrad.cli.main import main
from reliability.catalogue import Outcome, snapshot


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> Outcome``: the ``metagrad`` command run in-process."""

    def run(*argv: object) -> Outcome:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.err, captured.out)

    return run


@pytest.fixture
def keep():
    """``with keep(dir):`` asserts that every file below ``dir`` before the block is still
    there, byte-identical, after it (new files may appear)."""

    @contextlib.contextmanager
    def kept(root: Path) -> Iterator[None]:
        before = snapshot(Path(root))
        yield
        after = snapshot(Path(root))
        lost = {f for f in before if f not in after}
        changed = {f for f in before if f in after and after[f] != before[f]}
        assert not lost and not changed, f"lost {sorted(lost)}, changed {sorted(changed)}"

    return kept
