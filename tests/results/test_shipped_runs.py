"""The run directories behind RESULTS.md (results/) re-test to the numbers they report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metagrad.config import load_config
from metagrad.train.testing import run_test

ROOT = Path(__file__).resolve().parents[2]
SINUSOID = sorted((ROOT / "results" / "sinusoid").glob("maml_10shot-*"))
PAPER = {1: 0.67, 5: 0.38, 10: 0.35}  # MAML paper, Table 2 (K = 5)


def test_the_main_job_runs_are_shipped():
    assert [p.name for p in SINUSOID] == ["maml_10shot-1thread", "maml_10shot-2thread"]


@pytest.mark.parametrize("run", SINUSOID, ids=lambda p: p.name)
def test_a_shipped_sinusoid_run_retests_to_its_reported_numbers(run, tmp_path):
    copy = tmp_path / run.name  # never write into the repository
    shutil.copytree(run, copy)
    reported = json.loads((run / "results.json").read_text())
    result = run_test(copy, "best", cfg=load_config(copy / "config.toml"))
    for row in reported["steps"]:
        got = result.loss(row["step"])
        assert got.mean == pytest.approx(row["loss"]["mean"], rel=1e-6), row["step"]
    for step, paper in PAPER.items():  # meets the paper (the bar)
        assert result.loss(step).mean <= paper
    assert reported["checkpoint"] == "best at step 50000"
    assert np.isfinite(result.losses).all()
