"""A run's path = "auto" decision: printed, written to path.json, reused on a resume without
measuring, and invisible in what the run computes (an injected clock and memory probe)."""

from __future__ import annotations

import json

import pytest
import torch

from metagrad.algorithms import learner as learner_module
from metagrad.algorithms.autotune import Autotuner
from metagrad.config import load_config
from metagrad.errors import UsageError
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.trainer import resume_run, resumed_config, train
from sinusoid_runs import SINE

TINY = [
    "train.iterations=6",
    "train.val_every=0",
    "train.log_every=3",
    "train.checkpoint_every=3",
    "train.meta_batch_size=20",
]
# vectorized/8 is the fastest; vectorized over the budget of 1000 bytes
SECONDS = {"loop": 5.0, "vectorized": 1.0, "vectorized/16": 3.0, "vectorized/8": 2.0}
BYTES = {"loop": 10, "vectorized": 5000, "vectorized/16": 900, "vectorized/8": 500}


@pytest.fixture
def runs(monkeypatch):
    """Measuring on, with an injected clock and memory probe; counts the runs they see."""
    monkeypatch.delenv("METAGRAD_MEASURE_PATHS", raising=False)
    seen: list[str] = []

    def probe(table):
        def run(plan, fn):
            fn()
            seen.append(plan.label)
            return table[plan.label]

        return run

    monkeypatch.setattr(
        learner_module,
        "Autotuner",
        lambda budget: Autotuner(budget, timer=probe(SECONDS), memory=probe(BYTES)),
    )
    return seen


def cfg(*extra):
    return load_config(SINE, [*TINY, "algorithm.memory_budget=1000", *extra])


def weights(run):
    return load_checkpoint(run, "last")[0]


def test_the_decision_is_written_and_a_resume_reuses_it_without_measuring(tmp_path, runs, capsys):
    run = tmp_path / "auto"
    train(cfg(), run, test=False, max_steps=3)
    measured = len(runs)
    # each plan's memory; the 3 fitting ones timed, then again the 2 within 2x of the fastest
    assert measured == 4 + 3 + 2
    (decision,) = json.loads((run / "path.json").read_text())["decisions"]
    assert (decision["path"], decision["chunk_size"], decision["fits"]) == ("vectorized", 8, True)
    assert decision["budget_bytes"] == 1000 and "20 tasks of 10+10 examples" in decision["key"]
    assert {t["path"]: t["bytes"] for t in decision["trials"] if t["chunk_size"] is None} == {
        "loop": 10,
        "vectorized": 5000,
    }
    assert "path auto (20 tasks" in capsys.readouterr().out
    resume_run(run, test=False)
    assert len(runs) == measured  # nothing measured again
    assert "vectorized/8, as recorded in" in capsys.readouterr().out


def test_an_auto_run_equals_the_run_forced_onto_its_choice(tmp_path, runs):
    """Measuring draws nothing from the sampler or the random generators and leaves the
    optimizer alone: interrupted and resumed, the auto run is bit for bit the forced one."""
    train(cfg(), tmp_path / "auto", test=False, max_steps=3)
    resume_run(tmp_path / "auto", test=False)
    forced = cfg("algorithm.path=vectorized", "algorithm.chunk_size=8")
    train(forced, tmp_path / "forced", test=False)
    a, b = weights(tmp_path / "auto"), weights(tmp_path / "forced")
    assert all(torch.equal(a[k], b[k]) for k in a)
    states = [load_checkpoint(tmp_path / r, "last")[1] for r in ("auto", "forced")]
    assert states[0]["sampler"] == states[1]["sampler"]
    assert torch.equal(states[0]["rng"]["torch"], states[1]["rng"]["torch"])


def test_an_explicit_path_writes_no_record(tmp_path, runs):
    train(cfg("algorithm.path=loop"), tmp_path / "loop", test=False, max_steps=3)
    assert runs == [] and not (tmp_path / "loop" / "path.json").exists()


def test_a_damaged_record_is_refused_with_the_fix(tmp_path, runs):
    run = tmp_path / "auto"
    train(cfg(), run, test=False, max_steps=3)
    (run / "path.json").write_text("{not json")
    with pytest.raises(UsageError, match="path.json cannot be read .* delete it"):
        resume_run(run, test=False)


def test_a_resume_may_change_the_memory_budget(tmp_path, runs):
    run = tmp_path / "auto"
    train(cfg(), run, test=False, max_steps=3)
    assert resumed_config(run, ["algorithm.memory_budget=0.25"]).algorithm.memory_budget == 0.25
