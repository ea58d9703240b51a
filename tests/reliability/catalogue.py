"""The reliability catalogue's shared pieces: run the CLI in-process, check that a failure is
one clear line with the right exit code, and that nothing already written was lost. Its
fixtures ``cli`` and ``keep`` reach every test through tests/conftest.py.

A case reads::

    def test_out_pointing_at_a_file(tmp_path, cli, keep):
        target = tmp_path / "file"; target.write_text("x")
        with keep(tmp_path):                      # every file there stays byte-identical
            failure = cli("train", SINE, *TINY, "--out", target)
        failure.expect(2, "is a file")            # exit code, and words of the one line

Exit codes (README, "When things go wrong"): 0 success, 1 a runtime failure (disk, network,
divergence), 2 a usage error (bad config, flag, input or run directory), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metagrad.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SINE = str(ROOT / "configs" / "sinusoid" / "maml_10shot.toml")
# A tiny sinusoid run: a few iterations, a validation, a checkpoint, a short test.
TINY = [
    "--set",
    "train.iterations=6",
    "--set",
    "train.val_every=3",
    "--set",
    "train.val_tasks=4",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "train.log_every=3",
    "--set",
    "eval.tasks=4",
    "--set",
    "eval.inner_steps=2",
]


@dataclass
class Outcome:
    """What one CLI call gave: its exit code and its standard error."""

    code: int
    err: str
    out: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def expect(self, code: int, *words: str) -> None:
        """Exit ``code``; standard error is one line (no traceback) holding every word."""
        assert self.code == code, f"exit {self.code} (expected {code}); stderr:\n{self.err}"
        assert "Traceback" not in self.err, self.err
        assert len(self.lines) == 1, f"expected one line, got:\n{self.err}"
        for word in words:
            assert word.lower() in self.lines[0].lower(), f"{word!r} not in {self.lines[0]!r}"


def snapshot(root: Path) -> dict[str, str]:
    """The SHA-256 of every file below ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
