"""The time-to-accuracy benchmark trains every implementation on the same real episodes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repo root: ``benchmarks``

from benchmarks.l2l_loader import l2l_available  # noqa: E402
from benchmarks.time_to_accuracy import main  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "omniglot"


@pytest.mark.skipif(not (DATA / "images_background.npz").exists(), reason="no Omniglot data")
def test_the_first_runs_until_the_target_and_the_others_as_many_iterations(tmp_path):
    impls = "metagrad-loop,metagrad-vec-grouped" + (",l2l" if l2l_available() else "")
    common = ["--root", str(DATA), "--impls", impls, "--meta-batch", "2", "--val-tasks", "4"]
    common += ["--val-every", "1", "--threads", "1"]
    easy = main([*common, "--target", "0", "--max-iters", "3", "--out", str(tmp_path / "r.json")])
    assert [r["name"] for r in easy["runs"]] == impls.split(",")
    assert all(r["reached"]["iteration"] == 1 for r in easy["runs"])  # 0% is reached at once
    # Same weights, same episodes: the implementations agree on the first validation score.
    scores = {round(r["reached"]["accuracy"], 4) for r in easy["runs"]}
    assert len(scores) == 1
    assert json.loads((tmp_path / "r.json").read_text())["target"] == 0
    assert all(r["iterations"] == 1 for r in easy["runs"])
    hard = main([*common, "--target", "1.01", "--max-iters", "2"])
    assert all(r["reached"] is None and len(r["curve"]) == 2 for r in hard["runs"])
    figure = tmp_path / "tta.png"
    main(["--root", "unused", "--from-json", str(tmp_path / "r.json"), "--figure", str(figure)])
    assert figure.read_bytes().startswith(b"\x89PNG")
